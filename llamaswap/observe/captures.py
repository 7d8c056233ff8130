"""Request/response captures kept in a bounded in-memory cache (SPEC §7.4)."""

from __future__ import annotations

import base64
import zlib
from collections import OrderedDict
from typing import Any

import attrs

REDACTED = "[REDACTED]"
SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"}
)
# path -> (request headers, request body, response headers, response body)
_PARTS = {
    "/v1/audio/speech": (True, True, True, False),
    "/v1/images/generations": (True, True, True, False),
    "/sdapi/v1/txt2img": (True, True, True, False),
    "/v1/audio/voices": (True, False, True, True),
    "/v1/audio/transcriptions": (True, False, True, True),
    "/v1/images/edits": (True, False, True, False),
    "/sdapi/v1/img2img": (True, False, True, False),
}

_RESPONSE_DROP = frozenset({"content-encoding"})


def canonical(name: str) -> str:
    """HTTP canonical header form: ``x-api-key`` -> ``X-Api-Key``."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def redact(headers: dict[str, str], drop: frozenset[str] = frozenset()) -> dict[str, str]:
    """Canonical names, secrets replaced by ``[REDACTED]``, ``drop`` names removed."""
    out = {}
    for name, value in headers.items():
        low = name.lower()
        if low in drop:
            continue
        out[canonical(name)] = REDACTED if low in SECRET_HEADERS else value
    return out


@attrs.define
class Capture:
    """One stored request/response pair; absent parts are None.

    ``id`` is the activity row's, set when the row is stored.

    Headers are kept as received, packed into one string each, and redacted when read:
    most captures are never looked at, and thousands of small dicts would weigh several
    times the cache's nominal size.
    """

    id: int
    req_path: str
    packed_req_headers: str | None
    req_body: bytes | None
    packed_resp_headers: str | None
    resp_body: bytes | None

    @property
    def req_headers(self) -> dict[str, str] | None:
        """Request headers, canonical names, secrets redacted."""
        packed = self.packed_req_headers
        return None if packed is None else redact(unpack_headers(packed))

    @property
    def resp_headers(self) -> dict[str, str] | None:
        """Response headers, canonical names, secrets redacted, Content-Encoding dropped."""
        packed = self.packed_resp_headers
        return None if packed is None else redact(unpack_headers(packed), _RESPONSE_DROP)

    def size(self) -> int:
        """Bytes this capture holds (bodies plus header text)."""
        total = len(self.req_body or b"") + len(self.resp_body or b"")
        for packed in (self.packed_req_headers, self.packed_resp_headers):
            total += len(packed or "")
        return total

    def to_json(self) -> dict[str, Any]:
        """The ``/api/captures/<id>`` body."""

        def b64(data: bytes | None) -> str | None:
            return None if data is None else base64.b64encode(data).decode()

        return {
            "id": self.id,
            "req_path": self.req_path,
            "req_headers": self.req_headers,
            "req_body": b64(self.req_body),
            "resp_headers": self.resp_headers,
            "resp_body": b64(self.resp_body),
        }


def pack_headers(headers: dict[str, str]) -> str:
    """``{name: value}`` as one string: ``name: value`` lines, as on the wire.

    Header names hold no ``:`` and values no CR or LF (both parsers refuse them), so
    the lines split back unambiguously; half the cost of ``json.dumps``, and smaller.
    """
    return "\r\n".join([f"{name}: {value}" for name, value in headers.items()])


def unpack_headers(packed: str) -> dict[str, str]:
    """The dict ``pack_headers`` was given."""
    if not packed:
        return {}
    out = {}
    for line in packed.split("\r\n"):
        name, _, value = line.partition(": ")
        out[name] = value
    return out


def inflate(body: bytes, encoding: str, limit: int) -> bytes | None:
    """Decompress a gzip/deflate body (None when corrupt or larger than ``limit``)."""
    if encoding.lower() not in ("gzip", "deflate"):
        return body
    try:
        d = zlib.decompressobj(wbits=zlib.MAX_WBITS | 32)
        out = d.decompress(body, limit + 1)
    except zlib.error:
        return None
    return None if len(out) > limit or d.unconsumed_tail else out


def make_capture(
    capture_id: int,
    path: str,
    status: int | None,
    req_headers: dict[str, str],
    req_body: bytes,
    resp_headers: dict[str, str],
    resp_body: bytes | None,
) -> Capture:
    """Pick the parts SPEC §7.4 keeps for ``path``; failed requests keep no response body."""
    endpoint = path.split("?", 1)[0]
    want_rh, want_rb, want_sh, want_sb = _PARTS.get(endpoint, (True, True, True, True))
    if status != 200:
        want_sb = False
    return Capture(
        id=capture_id,
        req_path=endpoint,
        packed_req_headers=pack_headers(req_headers) if want_rh else None,
        req_body=req_body if want_rb else None,
        packed_resp_headers=pack_headers(resp_headers) if want_sh else None,
        resp_body=resp_body if want_sb else None,
    )


class CaptureCache:
    """Captures by id within ``max_bytes``, oldest evicted first."""

    def __init__(self, max_bytes: int) -> None:
        """Hold at most ``max_bytes`` (0 disables)."""
        self.max_bytes = max_bytes
        self._items: OrderedDict[int, Capture] = OrderedDict()
        self._size = 0

    @property
    def enabled(self) -> bool:
        """False when captureBuffer is 0."""
        return self.max_bytes > 0

    def add(self, capture: Capture) -> bool:
        """Store ``capture`` unless it is bigger than the whole cache; True when stored."""
        size = capture.size()
        if not self.enabled or size > self.max_bytes:
            return False
        self._items[capture.id] = capture
        self._size += size
        while self._size > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self._size -= old.size()
        return True

    def get(self, capture_id: int) -> Capture | None:
        """The capture, or None when missing or evicted."""
        return self._items.get(capture_id)

    def __contains__(self, capture_id: object) -> bool:
        """True when ``capture_id`` is still cached."""
        return capture_id in self._items
