"""Model extraction and rewriting for JSON, multipart, urlencoded and query requests."""

from __future__ import annotations

import json

import pytest

from llamaswap.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from llamaswap.web.extract import JSON, MULTIPART, as_model_string, extract, truthy

MP_TYPE = b"multipart/form-data; boundary=XyZ"


def multipart(fields: list[tuple[str, str | bytes, str | None]]) -> bytes:
    """A multipart body with (name, value, filename) parts and boundary XyZ."""
    out = b""
    for name, value, filename in fields:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        data = value if isinstance(value, bytes) else value.encode()
        out += b"--XyZ\r\nContent-Disposition: " + disp.encode() + b"\r\n\r\n" + data + b"\r\n"
    return out + b"--XyZ--\r\n"


def test_json_model_and_stream() -> None:
    """The JSON model field and stream truthiness are read; bytes are kept untouched."""
    body = b'{"model": "m1",  "stream": "true"}'
    ext = extract(b"POST", b"application/json; charset=utf-8", body, b"model=zz")
    assert (ext.kind, ext.model, ext.stream) == (JSON, "m1", True)
    assert ext.final_body() is body


def test_json_non_string_model() -> None:
    """A non-string model is used in its string form."""
    assert extract(b"POST", b"application/json", b'{"model": 7}', b"").model == "7"


def test_json_rewrite_reserializes() -> None:
    """Changing the model re-encodes the body, keeping key order and unicode."""
    ext = extract(b"POST", b"application/json", b'{"model": "a", "p": "\xc3\xa9"}', b"")
    ext.set_model("b")
    assert json.loads(ext.final_body()) == {"model": "b", "p": "é"}
    assert ext.final_body().startswith(b'{"model":"b"')


def test_malformed_json_names_position() -> None:
    """Malformed JSON is a 400 that says where it broke."""
    with pytest.raises(BadRequest, match="line 1 column"):
        extract(b"POST", b"application/json", b'{"model": ', b"")


def test_invalid_utf8_is_400() -> None:
    """A body that is not UTF-8 is a clear 400."""
    with pytest.raises(BadRequest, match="UTF-8"):
        extract(b"POST", b"application/json", b'{"model": "\xff"}', b"")


def test_json_array_is_400() -> None:
    """A JSON body that is not an object is rejected."""
    with pytest.raises(BadRequest, match="JSON object"):
        extract(b"POST", b"application/json", b"[1]", b"")


def test_get_uses_query() -> None:
    """GET requests take ?model= and ?stream=true."""
    ext = extract(b"GET", b"", b"", b"model=a%2Fb&stream=true")
    assert (ext.model, ext.stream) == ("a/b", True)
    ext.set_model("c")
    assert ext.query == b"stream=true&model=c"


def test_multipart_field_and_rewrite() -> None:
    """The multipart model field is found and replaced in place; files are untouched."""
    body = multipart([("file", b"\x00\xffRIFF", "a.wav"), ("model", "whisper", None)])
    ext = extract(b"POST", MP_TYPE, body, b"model=ignored")
    assert (ext.kind, ext.model) == (MULTIPART, "whisper")
    ext.set_model("large-v3")
    out = ext.final_body()
    assert b"\x00\xffRIFF" in out
    assert b'name="model"\r\n\r\nlarge-v3\r\n--XyZ--' in out


def test_multipart_falls_back_to_query() -> None:
    """Without a model field the URL's ?model= is used."""
    body = multipart([("file", b"x", "a.wav")])
    assert extract(b"POST", MP_TYPE, body, b"model=q").model == "q"


def test_multipart_without_boundary_is_400() -> None:
    """A multipart Content-Type with no boundary is a 400."""
    with pytest.raises(BadRequest):
        extract(b"POST", b"multipart/form-data", b"--x", b"")


def test_urlencoded() -> None:
    """Urlencoded bodies carry model and stream."""
    ext = extract(b"POST", b"application/x-www-form-urlencoded", b"model=m&stream=true", b"")
    assert (ext.model, ext.stream) == ("m", True)
    ext.set_model("n")
    assert ext.final_body() == b"stream=true&model=n"


def test_other_content_type_with_body_is_415() -> None:
    """A body of unknown type with no ?model= is a 415 that says what to send."""
    with pytest.raises(UnsupportedMediaType, match="application/json"):
        extract(b"POST", b"text/plain", b'{"model": "m"}', b"")


def test_truthy() -> None:
    """JSON truthiness for the stream flag."""
    assert truthy(True) and truthy(1) and truthy("true")
    assert not truthy(False) and not truthy(0) and not truthy("no") and not truthy(None)


DEEP = b"[" * 100_000 + b"]" * 100_000


def test_json_nested_too_deeply_is_a_bad_request() -> None:
    """A body deeper than the parser can follow is a 400 that says so."""
    body = b'{"model":"m","x":' + DEEP + b"}"
    with pytest.raises(BadRequest, match="nested too deeply"):
        extract(b"POST", b"application/json", body, b"")


def test_json_integer_too_long_to_convert_is_a_bad_request() -> None:
    """A number past Python's integer-digit limit is a 400, not an internal error."""
    body = b'{"model":"m","n":1' + b"9" * 5000 + b"}"
    with pytest.raises(BadRequest, match="number llamaswap cannot read"):
        extract(b"POST", b"application/json", body, b"")


def test_deep_model_value_or_rewrite_is_a_bad_request() -> None:
    """Writing a too-deep value back out (the model's text, a rewritten body) is a 400 too."""
    ext = extract(b"POST", b"application/json", b'{"model":"m","x":[[1]]}', b"")
    nested: list[object] = []
    for _ in range(100_000):
        nested = [nested]
    assert ext.json is not None
    ext.json["x"] = nested
    ext.changed = True
    with pytest.raises(BadRequest, match="nested too deeply"):
        ext.final_body()
    with pytest.raises(BadRequest, match="nested too deeply"):
        as_model_string(nested)


def test_json_too_large_for_memory_is_a_413(monkeypatch: pytest.MonkeyPatch) -> None:
    """A body the parser runs out of memory on is refused as too large, not an error."""

    def no_memory(text: str) -> object:
        raise MemoryError

    monkeypatch.setattr("llamaswap.web.extract.json.loads", no_memory)
    with pytest.raises(PayloadTooLarge, match="too large to parse"):
        extract(b"POST", b"application/json", b'{"model":"m"}', b"")
