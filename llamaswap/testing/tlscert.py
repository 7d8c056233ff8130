"""A throwaway self-signed certificate for TLS tests (server options and a client trust root)."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import ssl
from twisted.web.client import BrowserLikePolicyForHTTPS
from twisted.web.iweb import IPolicyForHTTPS


@attrs.frozen
class SelfSignedCert:
    """A certificate, its key (PEM), and what servers and clients need from them."""

    cert_pem: bytes
    key_pem: bytes

    def server_options(self) -> ssl.CertificateOptions:
        """Options for ``listenSSL`` / ``SSL4ServerEndpoint`` serving this certificate."""
        # cryptography objects: pyOpenSSL deprecates its own X509/PKey types here, but
        # Twisted's annotations still name those.
        return ssl.CertificateOptions(
            privateKey=serialization.load_pem_private_key(self.key_pem, None),  # type: ignore[arg-type]
            certificate=x509.load_pem_x509_certificate(self.cert_pem),  # type: ignore[arg-type]
        )

    def client_policy(self) -> IPolicyForHTTPS:
        """A browser-like HTTPS policy that trusts only this certificate."""
        return BrowserLikePolicyForHTTPS(trustRoot=ssl.Certificate.loadPEM(self.cert_pem))


def self_signed(names: Sequence[str], ips: Sequence[str] = ()) -> SelfSignedCert:
    """A certificate valid for one day for DNS ``names`` and IP addresses ``ips``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alt += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return SelfSignedCert(
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ),
    )
