"""Entry point of model-dispatched routes: extract and resolve the model, refuse or admit.

Requests refused before admission (unknown model, failed selector) are still shown to
observers as one finished record; admitted ones become a ``ModelCall``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.web.server import NOT_DONE_YET, Request

from llamaswap.errors import BadRequest, LlamaSwapError, ModelNotFound
from llamaswap.observe.hooks import RequestRecord, next_request_id, notify
from llamaswap.web.clientip import request_client_ip
from llamaswap.web.context import SiteContext, read_body, split_uri, strip_route_prefix
from llamaswap.web.dispatch import ModelCall
from llamaswap.web.extract import QUERY, extract
from llamaswap.web.names import Resolved, resolve_requested
from llamaswap.web.render import render_error

if TYPE_CHECKING:
    from llamaswap.web.app import App


def _unknown(name: str) -> ModelNotFound:
    return ModelNotFound(
        f"model {name!r} not found: it is not a configured model, alias, peer model or selector"
    )


def _observe_refusal(
    ctx: SiteContext,
    app: App,
    request: Request,
    resolved: Resolved,
    path: bytes,
    error: LlamaSwapError,
) -> None:
    """Refused before admission (unknown model, selector failure): still one record."""
    if not app.observers:
        return
    now = ctx.reactor.seconds()
    rec = RequestRecord(
        id=next_request_id(),
        started=now,
        method=request.method.decode("latin-1"),
        path=path.decode("latin-1"),
        model_id=resolved.model_id,
        requested_name=resolved.original,
        remote_ip=request_client_ip(request, app.config.trusted_proxies, ""),
        status=error.status,
        resp_content_type="application/json",
        finished_at=now,
        error=error.message,
    )
    if resolved.selector_id is not None:
        rec.metadata["selector"] = resolved.selector_id
    notify(app.observers, "request_started", rec)
    notify(app.observers, "request_finished", rec)


def render_model_request(ctx: SiteContext, request: Request) -> bytes | int:
    """Handle one model-dispatched request; answers at once on errors, else streams later."""
    app = ctx.get_app()
    raw_path, query = split_uri(request)
    try:
        body = read_body(request, app)
        ctype = request.getHeader(b"content-type") or b""
        ext = extract(request.method, ctype, body, query)
        if not ext.model:
            where = "?model= query parameter" if ext.kind == QUERY else "'model' in request body"
            raise BadRequest(f"missing {where}")
        resolved = resolve_requested(app, ext.model)
    except LlamaSwapError as e:
        return render_error(request, e)
    if resolved.error is not None:
        resolved.release()
        refusal = resolved.error
        if resolved.kind == "unknown" and resolved.requested:
            refusal = _unknown(resolved.requested)
        _observe_refusal(ctx, app, request, resolved, strip_route_prefix(raw_path), refusal)
        return render_error(request, refusal)
    call = ModelCall(ctx, app, request, ext, resolved, strip_route_prefix(raw_path), query)
    call.start()
    # The request is on its way to its upstream (or waiting for its model): a quiet moment.
    ctx.chores.run_while_idle()
    return NOT_DONE_YET
