"""The request observation contract: records and safe notification."""

from __future__ import annotations

from llamaswap.observe.hooks import (
    RequestRecord,
    next_request_id,
    notify,
    notify_chunk,
)


def _record() -> RequestRecord:
    return RequestRecord(
        id=next_request_id(),
        started=1.0,
        method="POST",
        path="/v1/chat/completions",
        model_id="m",
        requested_name="m",
        remote_ip="127.0.0.1",
    )


class _Boom:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def request_started(self, rec: RequestRecord) -> None:
        raise RuntimeError("observer bug")

    def response_started(self, rec: RequestRecord) -> None:
        self.seen.append("response_started")

    def response_chunk(self, rec: RequestRecord, data: bytes) -> None:
        raise RuntimeError("observer bug")

    def request_finished(self, rec: RequestRecord) -> None:
        self.seen.append("request_finished")


def test_ids_increase() -> None:
    """Each record gets a larger id than the previous one."""
    assert _record().id < _record().id


def test_failing_observer_does_not_stop_others() -> None:
    """An observer that raises is logged and the next observer still runs."""
    first, second = _Boom(), _Boom()
    rec = _record()
    notify([first, second], "request_started", rec)
    notify_chunk([first, second], rec, b"x")
    notify([first, second], "request_finished", rec)
    assert second.seen == ["request_finished"]
    assert first.seen == ["request_finished"]
