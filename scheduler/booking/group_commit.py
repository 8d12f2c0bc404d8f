"""Group commit: requests that arrive together are decided in one transaction.

Capacity decisions that overlap in time must run one after another (they read and then
take the same capacity), so under load they queue. Rather than each paying for its own
locks, reads and commit, the requests waiting at a moment are taken together: the first
waiting thread becomes the *leader*, runs the whole batch through ``run_batch`` in one
transaction, hands every request its own outcome and wakes the others; the next leader
takes whatever arrived meanwhile. Nobody waits for a timer: an idle service decides a
lone request at once, a busy one decides many per commit.

``run_batch(items)`` returns one outcome per item, in order: a value, or an exception
that belongs to that item alone (a refusal, a permission error). An exception raised by
``run_batch`` itself (the database went away, a constraint broke) fails the batch; each
item is then retried on its own, so one bad request never fails its neighbours.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class _Ticket(Generic[Item, Result]):
    __slots__ = ("done", "error", "item", "result", "wake")

    def __init__(self, item: Item) -> None:
        self.item = item
        self.done = False
        self.result: Result | None = None
        self.error: BaseException | None = None
        # Released once: when the request is decided, or when it is its turn to lead.
        # A lock per request, not one condition for all, so that a finished batch wakes
        # its own requests and the next leader only, not every waiting thread (they
        # would all queue for the GIL just as the next leader needs it).
        self.wake = threading.Lock()
        self.wake.acquire()


class GroupCommit(Generic[Item, Result]):
    def __init__(self, run_batch: Callable[[Sequence[Item]], Sequence[Result | BaseException]],
                 *, max_batch: int = 64) -> None:
        self._run_batch = run_batch
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._waiting: list[_Ticket[Item, Result]] = []
        self._leading = False
        self.batches = 0  # for tests and the benchmark: how many transactions ran
        self.items = 0

    @property
    def waiting(self) -> int:
        """Requests queued behind the batch being decided."""
        with self._lock:
            return len(self._waiting)

    def submit(self, item: Item) -> Result:
        """Decide ``item`` (together with whatever else is waiting); its outcome."""
        ticket: _Ticket[Item, Result] = _Ticket(item)
        with self._lock:
            self._waiting.append(ticket)
            lead = not self._leading
            self._leading = True
        if not lead:
            ticket.wake.acquire()  # decided, or handed the lead
            if ticket.done:
                return self._outcome(ticket)
        # This thread leads: it decides what waits, oldest first, until its own request
        # is decided, then hands the lead to the oldest request still waiting.
        try:
            while not ticket.done:
                with self._lock:
                    batch = self._waiting[:self.max_batch]
                    del self._waiting[:self.max_batch]
                self._decide(batch)
        finally:
            with self._lock:
                if self._waiting:
                    self._waiting[0].wake.release()
                else:
                    self._leading = False
        return self._outcome(ticket)

    def _decide(self, batch: list[_Ticket[Item, Result]]) -> None:
        try:
            outcomes = list(self._run_batch([ticket.item for ticket in batch]))
        except Exception as exc:
            if len(batch) > 1:  # find the one that broke it: each on its own
                for ticket in batch:
                    self._decide([ticket])
                return
            outcomes = [exc]
        except BaseException as exc:  # interrupted: nobody may wait for ever
            self._finish(batch, [exc] * len(batch))
            raise
        if len(outcomes) != len(batch):
            error = AssertionError("run_batch must return one outcome per item")
            outcomes = [error] * len(batch)
        self._finish(batch, outcomes)

    def _finish(self, batch: list[_Ticket[Item, Result]],
                outcomes: Sequence[Result | BaseException]) -> None:
        with self._lock:
            self.batches += 1
            self.items += len(batch)
        for ticket, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                ticket.error = outcome
            else:
                ticket.result = outcome
            ticket.done = True
            ticket.wake.release()  # the leader's own too: nobody waits on it, no harm

    @staticmethod
    def _outcome(ticket: _Ticket[Item, Result]) -> Result:
        error, ticket.error = ticket.error, None
        if error is not None:
            try:
                raise error
            finally:  # the traceback holds this frame: no cycle back to the error
                del error
        return ticket.result  # type: ignore[return-value]
