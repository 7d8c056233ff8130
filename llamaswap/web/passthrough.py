"""``/upstream/<model>/<path>``: any request, body untouched, to a model's own server (SPEC 5.7)."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING

from twisted.web.server import NOT_DONE_YET, Request

from llamaswap.errors import Conflict, LlamaSwapError, ModelNotFound
from llamaswap.process.state import ProcessState
from llamaswap.web.context import SiteContext, read_body, split_uri
from llamaswap.web.dispatch import ModelCall
from llamaswap.web.extract import Extracted, extract
from llamaswap.web.names import Resolved, resolve_upstream_path
from llamaswap.web.render import render_error

if TYPE_CHECKING:
    from llamaswap.web.app import App

PREFIX = b"/upstream/"
RAW = "raw"


@lru_cache(maxsize=64)
def _compiled(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p) for p in patterns)


def ignored(app: App, remainder: str) -> bool:
    """True when ``remainder`` matches one of ``upstream.ignorePaths``."""
    return any(p.search(remainder) for p in _compiled(tuple(app.config.ignore_paths)))


def _peer_model_rewrite(
    request: Request, body: bytes, query: bytes, used: str, bare: str, raw: Extracted
) -> Extracted:
    """SPEC 8: the body/query model is renamed to the peer's own name only if it is the
    name used in the path; anything unparsable is forwarded untouched."""
    ctype = request.getHeader(b"content-type") or b""
    try:
        ext = extract(request.method, ctype, body, query)
    except LlamaSwapError:
        return raw
    if ext.model != used:
        return raw
    ext.set_model(bare)
    ext.final_body()
    ext.kind = RAW
    return ext


def render_passthrough(ctx: SiteContext, request: Request) -> bytes | int:
    """Resolve the model by longest path prefix, redirect or refuse, else forward as is."""
    app = ctx.get_app()
    raw_path, query = split_uri(request)
    segments = raw_path[len(PREFIX) :].split(b"/")
    resolved, rest = resolve_upstream_path(app, segments)
    if resolved.error is not None:
        resolved.release()
        return render_error(request, resolved.error)
    if not rest:
        status = 301 if request.method in (b"GET", b"HEAD") else 308
        request.setResponseCode(status)
        request.setHeader(b"location", raw_path + b"/" + (b"?" + query if query else b""))
        return b""
    remainder = b"/" + b"/".join(rest)
    if resolved.kind == "local":
        upstream = app.upstreams.get(resolved.model_id)
        ready = upstream is not None and upstream.state == ProcessState.READY
        if not ready and ignored(app, remainder.decode("latin-1")):
            resolved.release()
            return render_error(
                request,
                Conflict(
                    f"model {resolved.model_id} is not loaded; path matches upstream.ignorePaths"
                ),
            )
    try:
        body = read_body(request, app)
    except LlamaSwapError as e:
        resolved.release()
        return render_error(request, e)
    stream = b"stream=true" in query.split(b"&")
    ext = Extracted(RAW, resolved.requested, stream, body, query)
    if resolved.kind == "peer" and resolved.peer_model and resolved.original != resolved.peer_model:
        ext = _peer_model_rewrite(request, body, query, resolved.original, resolved.peer_model, ext)
    call = ModelCall(ctx, app, request, ext, resolved, remainder, query, passthrough=True)
    call.start()
    return NOT_DONE_YET


COMFY_MODEL = "comfyui_auto"


def render_comfyui(ctx: SiteContext, request: Request) -> bytes | int:
    """``/comfyui/...`` (SPEC 5.8): the fixed model ``comfyui_auto``; only the root starts it."""
    app = ctx.get_app()
    raw_path, query = split_uri(request)
    if raw_path == b"/comfyui":
        status = 301 if request.method in (b"GET", b"HEAD") else 308
        request.setResponseCode(status)
        request.setHeader(b"location", b"/comfyui/" + (b"?" + query if query else b""))
        return b""
    if COMFY_MODEL not in app.config.models:
        return render_error(request, ModelNotFound(f"local model {COMFY_MODEL} not found"))
    remainder = raw_path[len(b"/comfyui") :]
    upstream = app.upstreams.get(COMFY_MODEL)
    ready = upstream is not None and upstream.state == ProcessState.READY
    if remainder != b"/" and not ready:
        return render_error(
            request, Conflict(f"model {COMFY_MODEL} is not loaded; only /comfyui/ can start it")
        )
    try:
        body = read_body(request, app)
    except LlamaSwapError as e:
        return render_error(request, e)
    resolved = Resolved("local", COMFY_MODEL, COMFY_MODEL, COMFY_MODEL)
    ext = Extracted(RAW, COMFY_MODEL, False, body, query)
    call = ModelCall(
        ctx, app, request, ext, resolved, remainder, query,
        passthrough=True, observe=False, ignore_websockets=True,
    )
    call.start()
    return NOT_DONE_YET
