"""Find the model a request names (SPEC 5.2) and rewrite it, parsing the body only once.

JSON bodies are decoded once and kept both as bytes (forwarded untouched when nothing
changes) and as an object (for filters); multipart bodies are scanned for the ``model``
field and edited in place; urlencoded bodies and query strings are re-encoded only when
the model changes.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode

import attrs

from llamaswap.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

JSON = "json"
MULTIPART = "multipart"
FORM = "form"
QUERY = "query"

_TRUTHY = {"true", "1", "t", "yes", "y", "on"}


@attrs.define(eq=False)
class Extracted:
    """What the body says: the model name, the streaming flag and the parsed form."""

    kind: str
    model: str
    stream: bool
    body: bytes
    query: bytes
    json: dict[str, Any] | None = None
    changed: bool = False

    def set_model(self, name: str) -> None:
        """Replace the model the request names (body field, form field or ?model=)."""
        if self.kind == JSON and self.json is not None:
            if self.json.get("model") != name:
                self.json["model"] = name
                self.changed = True
        elif self.kind == MULTIPART:
            self.body = _multipart_set_model(self.body, self._boundary, name)
        elif self.kind == FORM:
            self.body = _replace_model(self.body, name)
        else:
            self.query = _replace_model(self.query, name)
        self.model = name

    _boundary: bytes = b""

    def final_body(self) -> bytes:
        """The bytes to forward: the original ones unless the JSON object was changed."""
        if self.kind == JSON and self.changed and self.json is not None:
            try:
                text = json.dumps(self.json, ensure_ascii=False, separators=(",", ":"))
            except RecursionError:
                raise too_deep() from None
            self.body = text.encode()
            self.changed = False
        return self.body


def too_deep() -> BadRequest:
    """The refusal of a JSON body nested deeper than Python's parser can follow."""
    return BadRequest(
        "request body JSON is nested too deeply to parse: "
        "send objects and arrays nested at most a few hundred levels"
    )


def as_model_string(value: Any) -> str:
    """A JSON ``model`` value as text (non-strings in their JSON form, null as empty)."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    try:
        return json.dumps(value, separators=(",", ":"))
    except RecursionError:
        raise too_deep() from None


def truthy(value: Any) -> bool:
    """JSON truthiness of ``stream`` (true, 1, "true", ...)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        return value.strip().lower() in _TRUTHY
    return False


def parse_json_body(body: bytes) -> dict[str, Any]:
    """Decode a JSON object body, or raise BadRequest saying what and where.

    Too deep to parse (Python's parser recurses per level) or with an integer too long to
    convert is a BadRequest too, and a body the memory cannot hold once parsed is
    PayloadTooLarge: never an internal error.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest(f"request body is not valid UTF-8 (byte {e.start})") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadRequest(
            f"malformed JSON in request body: {e.msg} at line {e.lineno} column {e.colno}"
        ) from None
    except ValueError as e:  # an integer longer than Python converts (4300 digits)
        raise BadRequest(f"request body JSON has a number llamaswap cannot read: {e}") from None
    except RecursionError:
        raise too_deep() from None
    except MemoryError:
        raise PayloadTooLarge(
            "request body JSON is too large to parse in the memory llamaswap has: "
            "send a smaller body"
        ) from None
    if not isinstance(value, dict):
        raise BadRequest("request body must be a JSON object")
    return value


def _query_value(query: bytes, key: bytes) -> str | None:
    for k, v in parse_qsl(query, keep_blank_values=True):
        if k == key:
            try:
                return v.decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest(f"{key.decode()} is not valid UTF-8") from None
    return None


def _replace_model(encoded: bytes, name: str) -> bytes:
    pairs = [(k, v) for k, v in parse_qsl(encoded, keep_blank_values=True) if k != b"model"]
    pairs.append((b"model", name.encode()))
    return urlencode(pairs).encode()


_BOUNDARY = re.compile(rb'boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)
_NAME = re.compile(rb'(?:^|;)\s*name="([^"]*)"', re.IGNORECASE)


def multipart_boundary(content_type: bytes) -> bytes:
    """The boundary of a multipart/form-data Content-Type, or BadRequest."""
    match = _BOUNDARY.search(content_type)
    if not match:
        raise BadRequest("multipart/form-data request without a boundary")
    return match.group(1) or match.group(2)


def _multipart_parts(body: bytes, boundary: bytes) -> list[tuple[int, int, bytes, bytes]]:
    """(value start, value end, field name, disposition) of every part."""
    delim = b"--" + boundary
    parts = []
    pos = body.find(delim)
    if pos < 0:
        raise BadRequest("multipart body does not contain its boundary")
    while True:
        pos += len(delim)
        if body[pos : pos + 2] == b"--":
            break
        head_end = body.find(b"\r\n\r\n", pos)
        if head_end < 0:
            raise BadRequest("malformed multipart body: part headers never end")
        nxt = body.find(b"\r\n" + delim, head_end + 4)
        if nxt < 0:
            raise BadRequest("malformed multipart body: missing closing boundary")
        disposition = b""
        for line in body[pos:head_end].split(b"\r\n"):
            if line.lower().startswith(b"content-disposition:"):
                disposition = line
        match = _NAME.search(disposition.split(b":", 1)[-1])
        name = match.group(1) if match else b""
        parts.append((head_end + 4, nxt, name, disposition))
        pos = nxt + 2
    return parts


def _multipart_field(body: bytes, boundary: bytes, field: bytes) -> str | None:
    for start, end, name, disposition in _multipart_parts(body, boundary):
        if name == field and b"filename=" not in disposition.lower():
            return body[start:end].decode("utf-8", "replace")
    return None


def _multipart_set_model(body: bytes, boundary: bytes, model: str) -> bytes:
    for start, end, name, disposition in _multipart_parts(body, boundary):
        if name == b"model" and b"filename=" not in disposition.lower():
            return body[:start] + model.encode() + body[end:]
    part = (
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="model"\r\n\r\n'
        + model.encode() + b"\r\n"
    )
    return part + body


def extract(method: bytes, content_type: bytes, body: bytes, query: bytes) -> Extracted:
    """Find the model and streaming flag of a request (SPEC 5.2)."""
    ctype = content_type.lower()
    if method == b"GET" or method == b"HEAD":
        model = _query_value(query, b"model") or ""
        stream = (_query_value(query, b"stream") or "") == "true"
        return Extracted(QUERY, model, stream, body, query)
    if b"application/json" in ctype:
        obj = parse_json_body(body) if body.strip() else {}
        return Extracted(
            JSON, as_model_string(obj.get("model")), truthy(obj.get("stream")), body, query, obj
        )
    if b"multipart/form-data" in ctype:
        boundary = multipart_boundary(content_type)
        field = _multipart_field(body, boundary, b"model")
        if field is None:
            field = _query_value(query, b"model") or ""
        stream = (_multipart_field(body, boundary, b"stream") or "") == "true"
        ext = Extracted(MULTIPART, field, stream, body, query)
        ext._boundary = boundary
        return ext
    if b"application/x-www-form-urlencoded" in ctype:
        model = _query_value(body, b"model") or _query_value(query, b"model") or ""
        stream = (_query_value(body, b"stream") or "") == "true"
        return Extracted(FORM, model, stream, body, query)
    model = _query_value(query, b"model") or ""
    if not model and body.strip():
        shown = content_type.decode("latin-1") or "none"
        raise UnsupportedMediaType(
            f"cannot find the model: send the body as application/json "
            f"(Content-Type was {shown})"
        )
    return Extracted(QUERY, model, False, body, query)
