"""API key extraction and checking (SPEC 6)."""

from __future__ import annotations

import base64
import json

from hypothesis import given
from hypothesis import strategies as st
from treq.testing import StubTreq
from twisted.web.resource import Resource
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyRequest

from llamaswap.web.auth import authorize, extract_key, key_is_valid, render_unauthorized

KEYS = ("sk-one", "sk-two")


def request_with(**headers: bytes) -> DummyRequest:
    """A DummyRequest carrying the given headers (underscores become dashes)."""
    request = DummyRequest([b""])
    for name, value in headers.items():
        request.requestHeaders.addRawHeader(name.replace("_", "-").encode(), value)
    return request


def basic(user: bytes, password: bytes) -> bytes:
    """A Basic Authorization header value."""
    return b"Basic " + base64.b64encode(user + b":" + password)


def test_no_keys_allows_everything() -> None:
    """With no configured keys every request is authorized, even without headers."""
    assert authorize(request_with(), ())


def test_missing_key_refused() -> None:
    """A request with no credentials is refused when keys are configured."""
    assert not authorize(request_with(), KEYS)


def test_bearer_token_accepted() -> None:
    """A correct Bearer token (any key of the list) is accepted."""
    assert authorize(request_with(authorization=b"Bearer sk-two"), KEYS)


def test_bearer_scheme_case_insensitive() -> None:
    """The Bearer scheme name is case-insensitive."""
    assert authorize(request_with(authorization=b"bEaReR sk-one"), KEYS)


def test_bearer_token_is_everything_after_first_space() -> None:
    """A second space belongs to the token, so it no longer matches."""
    assert extract_key(request_with(authorization=b"Bearer  sk-one")) == b" sk-one"
    assert not authorize(request_with(authorization=b"Bearer  sk-one"), KEYS)


def test_basic_password_is_the_key() -> None:
    """Basic credentials use the password part; any user name works."""
    assert authorize(request_with(authorization=basic(b"anyone", b"sk-one")), KEYS)
    assert not authorize(request_with(authorization=basic(b"sk-one", b"nope")), KEYS)


def test_basic_password_may_contain_colons() -> None:
    """Only the first colon separates user and password."""
    request = request_with(authorization=basic(b"u", b"a:b"))
    assert extract_key(request) == b"a:b"


def test_undecodable_basic_falls_back_to_x_api_key() -> None:
    """Basic credentials that do not decode (or lack a colon) are ignored."""
    bad = request_with(authorization=b"Basic !!!notbase64", x_api_key=b"sk-one")
    assert authorize(bad, KEYS)
    no_colon = request_with(
        authorization=b"Basic " + base64.b64encode(b"sk-one"), x_api_key=b"sk-two"
    )
    assert extract_key(no_colon) == b"sk-two"


def test_x_api_key_accepted() -> None:
    """The x-api-key header is used when there is no Authorization header."""
    assert authorize(request_with(x_api_key=b"sk-one"), KEYS)


def test_wrong_bearer_not_rescued_by_x_api_key() -> None:
    """One candidate per request: a wrong Bearer token wins over a right x-api-key."""
    request = request_with(authorization=b"Bearer wrong", x_api_key=b"sk-one")
    assert not authorize(request, KEYS)


def test_basic_wins_over_bearer_style_x_api_key() -> None:
    """Basic has priority over x-api-key."""
    request = request_with(authorization=basic(b"u", b"wrong"), x_api_key=b"sk-one")
    assert not authorize(request, KEYS)


def test_unknown_scheme_falls_back_to_x_api_key() -> None:
    """An Authorization header with another scheme does not count as a candidate."""
    request = request_with(authorization=b"Digest sk-one", x_api_key=b"sk-two")
    assert extract_key(request) == b"sk-two"
    assert not authorize(request_with(authorization=b"Digest sk-one"), KEYS)


def test_prefix_of_key_refused() -> None:
    """Comparison is exact: a prefix or extension of a key is refused."""
    assert not key_is_valid(b"sk-on", KEYS)
    assert not key_is_valid(b"sk-one ", KEYS)
    assert key_is_valid("sk-ü".encode(), ("sk-ü",))


@given(st.binary(max_size=200), st.binary(max_size=200))
def test_header_parsing_never_raises(authorization: bytes, api_key: bytes) -> None:
    """Arbitrary header bytes never make key extraction or checking raise."""
    request = request_with(authorization=authorization, x_api_key=api_key)
    result = authorize(request, KEYS)
    assert isinstance(result, bool)


@given(st.text(min_size=1, max_size=40), st.text(max_size=40))
def test_basic_roundtrip(user: str, key: str) -> None:
    """Any key sent as a Basic password is extracted exactly."""
    header = b"Basic " + base64.b64encode(user.replace(":", "").encode() + b":" + key.encode())
    assert extract_key(request_with(authorization=header)) == key.encode()


class Guarded(Resource):
    """A tiny root that refuses requests without a key, like the real root does."""

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        """401 without a valid key, else a plain body."""
        if not authorize(request, KEYS):
            return render_unauthorized(request)
        return b"secret"


def test_unauthorized_response_over_http() -> None:
    """The 401 carries WWW-Authenticate and the JSON error envelope."""
    client = StubTreq(Guarded())
    d = client.get("http://example.test/x")
    client.flush()
    response = d.result
    assert response.code == 401
    assert response.headers.getRawHeaders(b"www-authenticate") == [b'Basic realm="llamaswap"']
    body_d = client.content(response)
    client.flush()
    assert json.loads(body_d.result) == {
        "src": "llamaswap",
        "error": {
            "message": "unauthorized: invalid or missing API key",
            "type": "authentication_error",
            "param": None,
            "code": "unauthorized",
        },
    }


def test_authorized_response_over_http() -> None:
    """A valid key gets through to the resource."""
    client = StubTreq(Guarded())
    d = client.get("http://example.test/x", headers={"x-api-key": "sk-one"})
    client.flush()
    body_d = client.content(d.result)
    client.flush()
    assert d.result.code == 200
    assert body_d.result == b"secret"
