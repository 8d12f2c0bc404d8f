"""GroupCommit: requests waiting together are decided in one batch, each gets its own
outcome, and a batch that fails is retried one by one."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from scheduler.group_commit import GroupCommit


class Refused(Exception):
    pass


def test_requests_that_wait_together_are_decided_in_one_batch_in_arrival_order() -> None:
    batches: list[list[int]] = []
    first_running = threading.Event()
    release = threading.Event()

    def run(batch: Sequence[int]) -> list[int | BaseException]:
        batches.append(list(batch))
        if len(batches) == 1:  # hold the first batch until the others queue behind it
            first_running.set()
            release.wait(10)
        return [item * 10 if item % 3 else Refused(item) for item in batch]

    queue: GroupCommit[int, int] = GroupCommit(run)
    results: dict[int, object] = {}

    def client(item: int) -> None:
        try:
            results[item] = queue.submit(item)
        except Refused as exc:
            results[item] = exc

    leader = threading.Thread(target=client, args=(1,))
    leader.start()
    assert first_running.wait(10)
    others = []
    for item in range(2, 8):  # arrive one after another while the leader's batch runs
        thread = threading.Thread(target=client, args=(item,))
        thread.start()
        others.append(thread)
        while queue.waiting < item - 1:  # queued, in order
            threading.Event().wait(0.001)
    release.set()
    for thread in [leader, *others]:
        thread.join(10)
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

    outcomes: list[str | BaseException] = []
    # Three queue up behind a leader that is held, so they are decided as one batch.
    gate = threading.Event()
    held = threading.Event()

    def slow_run(batch: Sequence[str]) -> list[str]:
        if batch == ["first"]:
            held.set()
            gate.wait(10)
        return run(batch)

    queue: GroupCommit[str, str] = GroupCommit(slow_run)

    def client(item: str) -> None:
        try:
            outcomes.append(queue.submit(item))
        except RuntimeError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=client, args=("first",))]
    threads[0].start()
    assert held.wait(10)
    for queued, item in enumerate(("a", "bad", "c"), start=1):
        thread = threading.Thread(target=client, args=(item,))
        thread.start()
        threads.append(thread)
        while queue.waiting < queued:  # queued, in order
            threading.Event().wait(0.001)
    gate.set()
    for thread in threads:
        thread.join(10)
    assert calls == [["first"], ["a", "bad", "c"], ["a"], ["bad"], ["c"]]
    assert sorted(o for o in outcomes if isinstance(o, str)) == ["A", "C", "FIRST"]
    errors = [o for o in outcomes if isinstance(o, RuntimeError)]
    assert len(errors) == 1 and str(errors[0]) == "constraint broken"


def test_a_batch_is_never_larger_than_max_batch() -> None:
    sizes: list[int] = []
    held = threading.Event()
    gate = threading.Event()

    def run(batch: Sequence[int]) -> list[int]:
        sizes.append(len(batch))
        if len(sizes) == 1:
            held.set()
            gate.wait(10)
        return list(batch)

    queue: GroupCommit[int, int] = GroupCommit(run, max_batch=4)
    threads = [threading.Thread(target=queue.submit, args=(0,))]
    threads[0].start()
    assert held.wait(10)
    threads += [threading.Thread(target=queue.submit, args=(i,)) for i in range(1, 10)]
    for thread in threads[1:]:
        thread.start()
    while queue.waiting < 9:
        threading.Event().wait(0.001)
    gate.set()
    for thread in threads:
        thread.join(10)
    assert sizes == [1, 4, 4, 1]
    assert queue.items == 10


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
    held = threading.Event()
    gate = threading.Event()

    def run(batch: Sequence[int]) -> list[int]:
        if batch == [0]:
            held.set()
            gate.wait(10)
            return [0]
        raise KeyboardInterrupt  # not an Exception: it must reach the leader's caller

    queue: GroupCommit[int, int] = GroupCommit(run)
    outcomes: dict[int, str] = {}

    def client(item: int) -> None:
        try:
            queue.submit(item)
            outcomes[item] = "ok"
        except KeyboardInterrupt:
            outcomes[item] = "interrupted"

    threads = [threading.Thread(target=client, args=(0,))]
    threads[0].start()
    assert held.wait(10)
    for item in (1, 2):
        threads.append(threading.Thread(target=client, args=(item,)))
        threads[-1].start()
        while queue.waiting < item:
            threading.Event().wait(0.001)
    gate.set()
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive(), "a request was left waiting"
    assert outcomes == {0: "ok", 1: "interrupted", 2: "interrupted"}


def test_a_batch_function_that_miscounts_fails_each_request_instead_of_hanging() -> None:
    held = threading.Event()
    gate = threading.Event()

    batches: list[list[int]] = []

    def run(batch: Sequence[int]) -> list[int]:
        batches.append(list(batch))
        if batch == [0]:
            held.set()
            gate.wait(10)
            return [0]
        return [1]  # one outcome for a batch of two

    queue: GroupCommit[int, int] = GroupCommit(run)
    outcomes: dict[int, str] = {}

    def client(item: int) -> None:
        try:
            queue.submit(item)
            outcomes[item] = "ok"
        except AssertionError as exc:
            outcomes[item] = str(exc)

    threads = [threading.Thread(target=client, args=(0,), daemon=True)]
    threads[0].start()
    assert held.wait(10)
    for item in (1, 2):
        threads.append(threading.Thread(target=client, args=(item,), daemon=True))
        threads[-1].start()
        while queue.waiting < item:
            threading.Event().wait(0.001)
    gate.set()
    for thread in threads:
        thread.join(5)
        assert not thread.is_alive(), "a request was left waiting"
    assert outcomes[0] == "ok"
    assert all("one outcome per item" in outcomes[i] for i in (1, 2))
    assert batches == [[0], [1, 2]]  # each request decided once, no empty batches
