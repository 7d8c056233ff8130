"""The extension contract: schedulers, swappers and the effects they act through.

Third-party plugins build on these names. Every method of ``IScheduler`` and
``ISwapper`` is called on the reactor thread, one event at a time, by the
Router; none of them may block, touch processes, sockets, the reactor or the
clock, or call back into the Router other than through ``IEffects``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import Attribute, Interface

from llamaswap.process.state import ProcessState
from llamaswap.router.events import HandlerRequest, ServeDone, SwapDone

if TYPE_CHECKING:
    from llamaswap.config.model import ModelConfig
    from llamaswap.memory import MemorySnapshot

__all__ = [
    "IEffects",
    "IScheduler",
    "ISchedulerFactory",
    "ISwapper",
    "ISwapperFactory",
    "ProcessState",
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
        """A new request arrived (called by the Router's event queue).

        Must resolve it, now or later, exactly once: ``grant_serve`` (and count
        it in flight only when that returns True), ``grant_error``, join a swap,
        queue it, or start a swap for it. Unknown models get
        ``grant_error(req, ModelNotFound(...))``; a model already holding its
        concurrency limit (queued, waiting and in-flight requests all count)
        gets ``ConcurrencyLimitExceeded``. Must return promptly: slow work is
        ``start_swap``.
        """

    def on_swap_done(event: SwapDone) -> None:
        """A swap started with ``start_swap`` finished, successfully or not.

        Grant or fail the requests waiting on it (``event.error`` is a
        LlamaSwapError to pass on as-is), then re-examine the queue. A
        SwapDone for a swap the scheduler no longer tracks (unloaded,
        cancelled) is ignored. Always delivered as its own event, never from
        inside ``start_swap``.
        """

    def on_serve_done(event: ServeDone) -> None:
        """A request granted with ``grant_serve`` (which returned True) ended.

        Arrives exactly once per such grant, however the request ended (done,
        client gone, upstream killed by an unload). Decrement the model's
        in-flight count; re-examine the queue when it may unblock something.
        """

    def on_cancel(req: HandlerRequest) -> None:
        """The client of a request that was not yet granted went away.

        Remove it from the queue and from any swap's waiters; never grant it
        afterwards (no ``grant_serve``, no ``grant_error``). A swap already
        started for it may finish. A cancel for a request the scheduler no
        longer holds (already granted, or one whose ``grant_serve`` returned
        False) is a no-op.
        """

    def on_unload(targets: Sequence[str], timeout: float) -> Deferred[None]:
        """Unload ``targets``: fail their waiters and queued requests, stop them.

        Used by the unload API and by TTL expiry. Fails waiting requests for
        ``targets`` with ``ModelUnloaded``, calls ``stop_processes(timeout,
        targets)`` and returns a Deferred that fires when they are stopped and
        the queue has been re-examined. Requests in flight on them are not
        waited for (their ``on_serve_done`` arrives later). The Router
        delivers no other event until the Deferred fires.
        """

    def on_shutdown(reason: Exception) -> None:
        """Fail every request still held (waiting or queued) with ``reason``.

        Process teardown is the Router's job: do not call ``start_swap`` or
        ``stop_processes`` here. The scheduler receives no event after this
        one.
        """

    def snapshot() -> dict[str, Any]:
        """A JSON-able view of the queue, waiters and in-flight counts.

        Conventional keys: ``queue`` (a list of ``{"model", "position", ...}``
        in queue order) and ``in_flight`` (``{model_id: count}``); the Router
        shows ``queue`` in its own snapshot and the contract checks compare
        ``in_flight`` with the grants they saw. May be called at any time
        between events; must not change state.
        """


class ISwapper(Interface):
    """The eviction policy: which running models must stop for a target to run."""

    def eviction_for(target: str, running: Sequence[str]) -> list[str]:
        """Return the models of ``running`` that must stop before ``target`` runs.

        Pure: no logging, no state, no I/O. ``running`` is every live process
        plus the targets of swaps already committed, sorted, and may contain
        ``target`` itself (never evict it). The result keeps ``running``'s
        order. Called by schedulers many times per request (every queue
        drain), so it must be fast. May raise a ``LlamaSwapError`` when
        ``target`` can never run (the scheduler ends the request with it).
        """

    def on_swap_start(target: str, running: Sequence[str]) -> None:
        """A swap for ``target`` was committed against ``running``; may log once.

        Called by the scheduler exactly once per ``start_swap``, with the same
        ``running`` that ``eviction_for`` saw. The one place a swapper logs.
        """


class IEffects(Interface):
    """What a scheduler may do to the world; implemented by the Router.

    Called only from inside scheduler methods, on the reactor thread. No
    effect ever calls the scheduler back: results arrive as later events.
    ``llamaswap.testing.effects.RecordingEffects`` is a recording fake.
    """

    def model_state(model_id: str) -> ProcessState | None:
        """The process state of ``model_id``, or None when it is not ours."""

    def running_models() -> Mapping[str, ProcessState]:
        """Every model whose process is starting, ready or stopping (a fresh mapping).

        Cheap enough for every request: O(running models), never O(configured).
        """

    def start_swap(model_id: str, evict: Sequence[str]) -> None:
        """Stop ``evict`` in parallel, then bring ``model_id`` to ready.

        Returns at once; the result arrives later as an ``on_swap_done``
        event, never from inside this call.
        """

    def grant_error(req: HandlerRequest, error: Exception) -> None:
        """End ``req`` with ``error`` (rendered as an OpenAI-style JSON error).

        Use ``llamaswap.errors`` classes; any other exception reaches the
        client as a 502 UpstreamError naming it. Ignored for a request whose
        client is gone.
        """

    def grant_serve(req: HandlerRequest, model_id: str) -> bool:
        """Hand ``req`` to ``model_id``'s upstream (which should be ready).

        Returns False when the client already went away: then no
        ``on_serve_done`` will follow and the request must not be counted.
        Returns True at most once per request. ``req.metadata`` as it is now
        travels with the grant (activity log).
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
        memory: Callable[[], MemorySnapshot],
    ) -> ISwapper:
        """Build a swapper; called with keywords only, new ones may be added.

        ``memory`` returns the latest ``llamaswap.memory.MemorySnapshot`` (GPU devices and
        per-model figures); call it when deciding, never keep what it returned.
        """
