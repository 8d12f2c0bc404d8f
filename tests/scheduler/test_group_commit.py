"""GroupCommit: requests waiting together are decided in one batch, each gets its own
outcome, and a batch that fails is retried one by one."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

import pytest

from scheduler.booking.group_commit import GroupCommit

T = TypeVar("T", bound=Hashable)


class Refused(Exception):
    pass


def behind_a_held_leader(run: Callable[[Sequence[T]], Sequence[object]], first: T,
                         others: Sequence[T], *, max_batch: int = 64,
                         ) -> tuple[GroupCommit[T, object], dict[T, object]]:
    """Submit ``first``, hold its batch until ``others`` have queued behind it one after
    another, then let everything run. Returns the queue and each request's outcome (its
    result or the exception it raised); fails if any request is left waiting."""
    held, gate = threading.Event(), threading.Event()

    def holding_run(batch: Sequence[T]) -> Sequence[object]:
        if not held.is_set():
            held.set()
            gate.wait(10)
        return run(batch)

    queue: GroupCommit[T, object] = GroupCommit(holding_run, max_batch=max_batch)  # type: ignore[arg-type]
    outcomes: dict[T, object] = {}

    def client(item: T) -> None:
        try:
            outcomes[item] = queue.submit(item)
        except BaseException as exc:  # the outcome under test
            outcomes[item] = exc

    threads = [threading.Thread(target=client, args=(first,), daemon=True)]
    threads[0].start()
    assert held.wait(10)
    for queued, item in enumerate(others, start=1):
        threads.append(threading.Thread(target=client, args=(item,), daemon=True))
        threads[-1].start()
        while queue.waiting < queued:  # queued, in order
            threading.Event().wait(0.001)
    gate.set()
    for thread in threads:
        thread.join(5)
        assert not thread.is_alive(), "a request was left waiting"
    return queue, outcomes


def test_requests_that_wait_together_are_decided_in_one_batch_in_arrival_order() -> None:
    batches: list[list[int]] = []

    def run(batch: Sequence[int]) -> list[object]:
        batches.append(list(batch))
        return [item * 10 if item % 3 else Refused(item) for item in batch]

    queue, results = behind_a_held_leader(run, 1, range(2, 8))
    assert batches == [[1], [2, 3, 4, 5, 6, 7]]
    assert (queue.batches, queue.items) == (2, 7)
    assert {k: v for k, v in results.items() if not isinstance(v, Refused)} == {
        1: 10, 2: 20, 4: 40, 5: 50, 7: 70}
    assert all(isinstance(results[k], Refused) for k in (3, 6))


def test_a_batch_that_fails_is_retried_one_by_one_so_only_the_culprit_fails() -> None:
    calls: list[list[str]] = []

    def run(batch: Sequence[str]) -> list[str]:
        calls.append(list(batch))
        if "bad" in batch:
            raise RuntimeError("constraint broken")
        return [item.upper() for item in batch]

    _, outcomes = behind_a_held_leader(run, "first", ["a", "bad", "c"])
    assert calls == [["first"], ["a", "bad", "c"], ["a"], ["bad"], ["c"]]
    assert {k: v for k, v in outcomes.items() if k != "bad"} == {
        "first": "FIRST", "a": "A", "c": "C"}
    assert isinstance(outcomes["bad"], RuntimeError)
    assert str(outcomes["bad"]) == "constraint broken"


def test_a_batch_is_never_larger_than_max_batch() -> None:
    sizes: list[int] = []

    def run(batch: Sequence[int]) -> list[int]:
        sizes.append(len(batch))
        return list(batch)

    queue, outcomes = behind_a_held_leader(run, 0, range(1, 10), max_batch=4)
    assert sizes == [1, 4, 4, 1]
    assert queue.items == 10
    assert outcomes == {i: i for i in range(10)}


@pytest.mark.parametrize("clients", [40])
def test_many_threads_each_get_their_own_result(clients: int) -> None:
    queue: GroupCommit[int, int] = GroupCommit(lambda batch: [i * i for i in batch])
    results: dict[int, int] = {}
    barrier = threading.Barrier(clients)

    def client(item: int) -> None:
        barrier.wait()
        results[item] = queue.submit(item)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == {i: i * i for i in range(clients)}
    assert queue.items == clients


def test_a_leader_that_is_interrupted_leaves_nobody_waiting() -> None:
    def run(batch: Sequence[int]) -> list[int]:
        if batch == [0]:
            return [0]
        raise KeyboardInterrupt  # not an Exception: it must reach the leader's caller

    _, outcomes = behind_a_held_leader(run, 0, [1, 2])
    assert outcomes[0] == 0
    assert all(isinstance(outcomes[i], KeyboardInterrupt) for i in (1, 2))


def test_a_batch_function_that_miscounts_fails_each_request_instead_of_hanging() -> None:
    batches: list[list[int]] = []

    def run(batch: Sequence[int]) -> list[int]:
        batches.append(list(batch))
        return [0] if batch == [0] else [1]  # one outcome for a batch of two

    _, outcomes = behind_a_held_leader(run, 0, [1, 2])
    assert outcomes[0] == 0
    assert all(isinstance(outcomes[i], AssertionError)
               and "one outcome per item" in str(outcomes[i]) for i in (1, 2))
    assert batches == [[0], [1, 2]]  # each request decided once, no empty batches
