"""The retry wrapper's contract, without a network: what is retried, how long it waits,
when it gives up. (The network behaviour is proven in test_fault_reconnect.py.)"""

from __future__ import annotations

import random

import pytest

from migrate.engine.retry import RetryingSource, RetryPolicy
from migrate.errors import AuthError, ConnectError, MessageError
from migrate.model import Folder

INBOX = Folder(name="INBOX", server_name="INBOX", delimiter="/")


class FlakySource:
    """Fails ``failures`` times with ``error``, then answers; counts reconnects."""

    def __init__(self, failures: int, error: Exception, reconnect_fails: int = 0) -> None:
        self.failures, self.error, self.reconnect_fails = failures, error, reconnect_fails
        self.reconnects = 0
        self.calls = 0

    def reconnect(self) -> None:
        self.reconnects += 1
        if self.reconnect_fails > 0:
            self.reconnect_fails -= 1
            raise ConnectError("cannot connect to host: Connection refused")

    def list_folders(self) -> list[Folder]:
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise self.error
        return [INBOX]

    def close(self) -> None:
        pass


def policy(retries: int, waits: list[float]) -> RetryPolicy:
    return RetryPolicy(retries=retries, delay=1.0, max_delay=8.0, sleep=waits.append,
                       rng=random.Random(7))


def test_backoff_doubles_with_jitter_and_is_capped():
    p = RetryPolicy(delay=1.0, max_delay=8.0, rng=random.Random(1))
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0), (9, 8.0)]:
        waits = [p.backoff(attempt) for _ in range(50)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(set(waits)) > 1  # jitter: not lockstep


def test_transient_errors_are_retried_after_a_fresh_connection():
    waits: list[float] = []
    inner = FlakySource(3, ConnectError("connection to h lost while listing"))
    src = RetryingSource(inner, policy(5, waits))  # type: ignore[arg-type]
    assert src.list_folders() == [INBOX]
    assert inner.reconnects == 3 and len(waits) == 3
    assert waits[0] <= 1.0 < waits[2]


@pytest.mark.parametrize("error", [AuthError("authentication failed"), MessageError("bad folder")])
def test_permanent_errors_are_not_retried(error):
    waits: list[float] = []
    inner = FlakySource(1, error)
    with pytest.raises(type(error)):
        RetryingSource(inner, policy(5, waits)).list_folders()  # type: ignore[arg-type]
    assert inner.reconnects == 0 and waits == []


def test_unreachable_server_spends_the_budget_then_exit_4():
    waits: list[float] = []
    inner = FlakySource(1, ConnectError("connection to h lost"), reconnect_fails=99)
    with pytest.raises(ConnectError) as info:
        RetryingSource(inner, policy(4, waits)).list_folders()  # type: ignore[arg-type]
    assert info.value.exit_code == 4
    assert "gave up after 4 reconnect attempts" in str(info.value)
    assert inner.reconnects == 4 and len(waits) == 4
