"""Thousands of malformed and unusual requests against the running service (issue 21's fuzz).

Every case runs on its own connection. A case that ends on a request boundary is followed
by a closing ``GET /health``: the server must answer it all and close, within a deadline
(no hang). After every batch a chat must still be answered; at the end nothing may be
held and the log may show no failure. ``LLAMASWAP_FUZZ_CASES`` and ``LLAMASWAP_FUZZ_SEED``
run a longer or another campaign than CI's.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest_twisted
from fuzz_requests import Case, cases
from hostile_support import (
    chat_works,
    port_of,
    running_service,
    start_watching_log,
    stop_watching_log,
    wait_until_nothing_held,
)
from rawhttp import RawResponse, read_responses
from twisted.internet.threads import deferToThread

CASES = int(os.environ.get("LLAMASWAP_FUZZ_CASES", "1200"))
SEED = int(os.environ.get("LLAMASWAP_FUZZ_SEED", "20261207"))
BATCH = 250
WORKERS = 8
CLOSING = b"GET /health HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n"
ANSWER_DEADLINE = 20.0  # seconds for a complete case to be answered and closed
INCOMPLETE_WAIT = 0.3  # seconds an incomplete case waits before the client gives up


@dataclass
class Outcome:
    """What one case got back."""

    case: Case
    statuses: list[int] = field(default_factory=list)
    hung: bool = False


def run_case(port: int, case: Case) -> Outcome:
    """Send one case on a new connection and read what comes back."""
    outcome = Outcome(case)
    with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_DEADLINE) as sock:
        try:
            sock.sendall(case.data + (CLOSING if case.complete else b""))
        except OSError:
            return outcome  # the server closed on a bad head before reading it all
        if not case.complete:
            sock.settimeout(INCOMPLETE_WAIT)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                outcome.hung = case.complete
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    responses: Sequence[RawResponse] = read_responses(received)
    outcome.statuses = [r.status for r in responses]
    return outcome


def run_batch(port: int, batch: list[Case]) -> list[Outcome]:
    """Run ``batch`` over several connections at once (called in a thread)."""
    with ThreadPoolExecutor(WORKERS) as pool:
        return list(pool.map(lambda case: run_case(port, case), batch))


@pytest_twisted.ensureDeferred
async def test_fuzzed_requests_never_crash_hang_or_hold(tmp_path: Path) -> None:
    """No 5xx, no hang, no traceback; chats answered after each batch; nothing held after."""
    trouble = start_watching_log()
    all_cases = list(cases(SEED, CASES))
    outcomes: list[Outcome] = []
    try:
        async with running_service(tmp_path) as svc:
            port = port_of(svc)
            for start in range(0, len(all_cases), BATCH):
                outcomes += await deferToThread(run_batch, port, all_cases[start:start + BATCH])
                await chat_works(svc, "alpha")
            await wait_until_nothing_held(svc)
    finally:
        stop_watching_log(trouble)
    hung = [o.case for o in outcomes if o.hung]
    errors = [(o.case, o.statuses) for o in outcomes if any(s >= 500 for s in o.statuses)]
    answered = sum(len(o.statuses) for o in outcomes)
    assert hung == []
    assert errors == []
    assert trouble.events == []
    assert answered >= len(all_cases) // 2  # the campaign reached the service


def test_fuzz_cases_are_reproducible() -> None:
    """The same seed gives the same cases, so a failure can be replayed."""
    assert [c.data for c in cases(7, 50)] == [c.data for c in cases(7, 50)]
    assert [c.data for c in cases(7, 50)] != [c.data for c in cases(8, 50)]



