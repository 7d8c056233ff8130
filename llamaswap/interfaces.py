"""The extension contract: schedulers, swappers and the effects they act through.

Third-party plugins build on these names. Every method of ``IScheduler`` and
``ISwapper`` is called on the reactor thread, one event at a time, by the
Router; none of them may block, touch processes, sockets, the reactor or the
clock, or call back into the Router other than through ``IEffects``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import Attribute, Interface

from llamaswap.process.state import ProcessState
from llamaswap.router.events import HandlerRequest, ServeDone, SwapDone

if TYPE_CHECKING:
    from llamaswap.config.model import ModelConfig

__all__ = [
    "IEffects",
    "IScheduler",
    "ISchedulerFactory",
    "ISwapper",
    "ISwapperFactory",
]


class IScheduler(Interface):
    """Owns the queue, in-flight counts and the decision tree for every request.

    The Router delivers each event by calling one method, on the reactor
    thread, never re-entrantly: a method is never called while another is
    running. While the Deferred returned by ``on_unload`` is pending no other
    event is delivered. A scheduler acts only through the ``IEffects`` it was
    built with.
    """

    def on_request(req: HandlerRequest) -> None:
        """A new request arrived.

        Must resolve it, now or later, exactly once: ``grant_serve`` (and count
        it in flight only when that returns True), ``grant_error``, join a swap,
        queue it, or start a swap for it. Unknown models get
        ``grant_error(req, ModelNotFound(...))``.
        """

    def on_swap_done(event: SwapDone) -> None:
        """A swap started with ``start_swap`` finished, successfully or not.

        Grant or fail the requests waiting on it, then re-examine the queue.
        A SwapDone for a swap the scheduler no longer tracks is ignored.
        """

    def on_serve_done(event: ServeDone) -> None:
        """A request granted with ``grant_serve`` (which returned True) ended."""

    def on_cancel(req: HandlerRequest) -> None:
        """The client of a request that was not yet granted went away.

        Remove it from the queue and from any swap's waiters; never grant it
        afterwards. A cancel for a request the scheduler no longer holds is a
        no-op.
        """

    def on_unload(targets: Sequence[str], timeout: float) -> Deferred[None]:
        """Unload ``targets``: fail their waiters and queued requests, stop them.

        Calls ``stop_processes`` and returns a Deferred that fires when they
        are stopped and the queue has been re-examined. The Router delivers
        no other event until it fires.
        """

    def on_shutdown(reason: Exception) -> None:
        """Fail every request still held (waiting or queued) with ``reason``.

        Process teardown is the Router's job; the scheduler receives no event
        after this one.
        """

    def snapshot() -> dict[str, Any]:
        """A JSON-able view of the queue, waiters and in-flight counts."""


class ISwapper(Interface):
    """The eviction policy: which running models must stop for a target to run."""

    def eviction_for(target: str, running: Sequence[str]) -> list[str]:
        """Return the models of ``running`` that must stop before ``target`` runs.

        Pure: no logging, no state. ``running`` is every live process plus the
        targets of swaps already committed; the result keeps ``running``'s
        order. May be called many times per request.
        """

    def on_swap_start(target: str, running: Sequence[str]) -> None:
        """A swap for ``target`` was committed against ``running``; may log once."""


class IEffects(Interface):
    """What a scheduler may do to the world; implemented by the Router."""

    def model_state(model_id: str) -> ProcessState | None:
        """The process state of ``model_id``, or None when it is not ours."""

    def running_models() -> Mapping[str, ProcessState]:
        """Every model whose process is starting, ready or stopping."""

    def start_swap(model_id: str, evict: Sequence[str]) -> None:
        """Stop ``evict`` in parallel, then bring ``model_id`` to ready.

        Returns at once; the result arrives later as an ``on_swap_done``
        event, never from inside this call.
        """

    def grant_error(req: HandlerRequest, error: Exception) -> None:
        """End ``req`` with ``error`` (rendered as an OpenAI-style JSON error)."""

    def grant_serve(req: HandlerRequest, model_id: str) -> bool:
        """Hand ``req`` to ``model_id``'s upstream.

        Returns False when the client already went away: then no
        ``on_serve_done`` will follow and the request must not be counted.
        """

    def stop_processes(timeout: float, ids: Sequence[str]) -> Deferred[None]:
        """Stop ``ids`` in parallel (SIGKILL after ``timeout`` seconds).

        The Deferred fires when every one of them has exited. Unknown ids are
        skipped.
        """


class ISchedulerFactory(IPlugin):
    """A plugin that builds schedulers; a plugin module holds an instance."""

    name = Attribute("str: the name routing.scheduler.use selects")
    description = Attribute("str: one line for --help and error messages")

    def build(
        *,
        name: str,
        effects: IEffects,
        swapper: ISwapper,
        settings: Mapping[str, Any],
        models: Mapping[str, ModelConfig],
        log: Logger,
    ) -> IScheduler:
        """Build a scheduler; called with keywords only, new ones may be added."""


class ISwapperFactory(IPlugin):
    """A plugin that builds swappers; a plugin module holds an instance."""

    name = Attribute("str: the name routing.router.use selects")
    description = Attribute("str: one line for --help and error messages")

    def build(
        *,
        settings: Mapping[str, Any],
        models: Mapping[str, ModelConfig],
        log: Logger,
    ) -> ISwapper:
        """Build a swapper; called with keywords only, new ones may be added."""
