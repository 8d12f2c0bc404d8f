"""The front's side of its media workers: start them, talk to them, restart the dead.

One :class:`WorkerProcess` per core runs ``python -m mcu.worker`` with one end of a Unix
socket pair as its control channel (mcu/channel.py, docs/workers.md). The front never
touches a packet: it sends requests (join, answer, mute, leave, ...) to the worker that
hosts a participant and receives events (offers, speaker, participants, load).

A worker that dies (a crash, ``kill -9``) is reported to the front at once, so it can
send that worker's participants back to join again, and is started anew with the same
index. :class:`InlineWorker` runs the same service inside the front process, for
debugging and for tests that look at the media objects themselves; its messages go
through the same JSON encoding, so it speaks exactly the channel's protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mcu.channel import Channel, ChannelClosed, ChannelError

logger = logging.getLogger(__name__)

READY_TIMEOUT_S = 30.0  # importing aiortc and friends takes 1-2 s; a loaded machine more
RESTART_BACKOFF_S = (0.0, 0.5, 1.0, 2.0, 5.0)  # a worker that keeps crashing is not spun
# A ready worker reports its load every second (mcu/worker.py); one silent this long is
# stopped (SIGSTOP) or hung, and its calls are as dead as a crashed one's: it is killed
# and replaced. Long enough for a busy worker on a loaded machine to be late.
HUNG_AFTER_S = 15.0

EventHandler = Callable[[int, str, dict[str, Any]], None]
LostHandler = Callable[[int], None]


@dataclass
class WorkerState:
    """What the front knows of one worker: liveness, capacity, and its last load report."""

    index: int
    capacity_units: int
    ready: bool = False
    pid: int | None = None
    pipe: tuple[str, int] | None = None  # where other workers pipe a room's tracks to it
    pipe_secret: str = ""  # hex: keys what it pipes to other nodes' workers (mcu/pipe.py)
    restarts: int = 0
    load: dict[str, Any] = field(default_factory=dict)
    units: dict[str, int] = field(default_factory=dict)  # participant -> units placed here
    # A room's mixing and composite cost once on each worker that mixes it: room -> its
    # mixed participants here (scheduler_unit_cost_mixed_room, docs/scheduler.md).
    mixed: dict[str, set[str]] = field(default_factory=dict)
    mixed_room_units: int = 0

    @property
    def used_units(self) -> int:
        return sum(self.units.values()) + self.mixed_room_units * len(self.mixed)

    def units_for(self, units: int, mixed_room: str | None) -> int:
        """What one more participant costs here: ``units``, and the room's composite
        when it is the room's first mixed participant on this worker."""
        first = mixed_room is not None and mixed_room not in self.mixed
        return units + (self.mixed_room_units if first else 0)

    @property
    def spare_units(self) -> int:
        return self.capacity_units - self.used_units


class WorkerProcess:
    """One worker process and its channel; started again after it dies."""

    def __init__(self, state: WorkerState, config: dict[str, Any], on_event: EventHandler,
                 on_lost: LostHandler) -> None:
        self.state = state
        self.config = config
        self.on_event, self.on_lost = on_event, on_lost
        self.channel: Channel | None = None
        self.process: asyncio.subprocess.Process | None = None
        self._ready = asyncio.Event()
        self._running: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        self._running = asyncio.ensure_future(self._supervise())
        await self.wait_ready()

    async def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def _supervise(self) -> None:
        failures = 0
        while not self._stopping:
            started = asyncio.get_running_loop().time()
            try:
                await self._run_once()
            except Exception:
                logger.exception("worker %d: could not run", self.state.index)
            if self._stopping:
                return
            self.state.ready, self._ready = False, asyncio.Event()
            # What the dead process had and said goes with it: the operator's page must not
            # show its last rooms and participants while it is down, nor the others pipe
            # to its old address, nor its rooms' composites count against the new one.
            self.state.units.clear()
            self.state.mixed.clear()
            self.state.load, self.state.pipe = {}, None
            self.state.restarts += 1
            try:
                self.on_lost(self.state.index)
            except Exception:
                logger.exception("worker %d: handling its loss failed", self.state.index)
            # Back off only when it dies soon after starting (a crash loop).
            lived = asyncio.get_running_loop().time() - started
            failures = failures + 1 if lived < 10 else 0
            await asyncio.sleep(RESTART_BACKOFF_S[min(failures, len(RESTART_BACKOFF_S) - 1)])

    async def _run_once(self) -> None:
        front_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            try:
                self.process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "mcu.worker", "--index", str(self.state.index),
                    "--channel-fd", str(worker_end.fileno()), "--config", json.dumps(self.config),
                    pass_fds=(worker_end.fileno(),), stdin=asyncio.subprocess.DEVNULL)
            finally:
                worker_end.close()
        except BaseException:
            # The supervisor tries again (and again, in a crash loop): each failed start
            # must close its end now, not whenever the failure and its frames are freed.
            front_end.close()
            raise
        self.state.pid = self.process.pid
        logger.info("worker %d: started, pid %d", self.state.index, self.process.pid)
        reader, writer = await asyncio.open_unix_connection(sock=front_end)
        self.channel = Channel(reader, writer, name=f"worker{self.state.index}",
                               on_event=self._event)
        watching = asyncio.ensure_future(self._watch(self.channel, self.process))
        try:
            await self.channel.run()  # until the worker's end of the stream closes
        finally:
            watching.cancel()
            self.channel.close()
            if self.process.returncode is None:
                # A worker whose channel broke is no use: make sure it is gone.
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
            code = await self.process.wait()
            if not self._stopping:
                logger.error("worker %d (pid %d) exited with %s", self.state.index,
                             self.process.pid, code)

    async def _watch(self, channel: Channel, process: asyncio.subprocess.Process) -> None:
        """Kill the worker when it goes silent: the end of its channel then restarts it
        as after a crash, and its participants rejoin. Before it is ready it has
        READY_TIMEOUT_S to start (a restart that hangs would otherwise never end)."""
        loop = asyncio.get_running_loop()
        while not channel.closed.is_set():
            await asyncio.sleep(min(1.0, HUNG_AFTER_S / 3))
            limit = HUNG_AFTER_S if self.state.ready else READY_TIMEOUT_S
            silent = loop.time() - channel.last_received
            if silent > limit and process.returncode is None:
                logger.error("worker %d (pid %d) silent for %.0f s: killing it",
                             self.state.index, process.pid, silent)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                return

    def _event(self, event: str, data: dict[str, Any]) -> None:
        if event == "ready":
            self.state.pipe = (str(data["pipe"][0]), int(data["pipe"][1]))
            self.state.pipe_secret = str(data.get("pipe_secret", ""))
            self.state.ready = True
            self._ready.set()
            logger.info("worker %d: ready", self.state.index)
        elif event == "load":
            self.state.load = data
        self.on_event(self.state.index, event, data)

    async def request(self, method: str, params: dict[str, Any], timeout: float) -> Any:
        if not self.state.ready:
            loop = asyncio.get_running_loop()
            started = loop.time()
            try:
                await self.wait_ready(min(timeout, READY_TIMEOUT_S))
            except TimeoutError:
                raise ChannelClosed() from None
            # The caller's timeout bounds the whole wait: the answer gets what is left of
            # it, not a timeout of its own on top (nearly twice as long in all).
            timeout = max(0.0, timeout - (loop.time() - started))
        assert self.channel is not None
        return await self.channel.request(method, params, timeout)

    def counters(self) -> dict[str, int]:
        return dict(self.state.load.get("counters", {}))

    def kill(self) -> None:
        """For tests and drills: end the process as a crash would (SIGKILL)."""
        if self.process is not None and self.process.returncode is None:
            os.kill(self.process.pid, signal.SIGKILL)

    async def stop(self) -> None:
        self._stopping = True
        if self.channel is not None:
            self.channel.close()  # the worker exits when its channel ends
        if self.process is not None and self.process.returncode is None:
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        if self._running is not None:
            self._running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._running


class InlineWorker:
    """The worker service inside the front process (``MULTIPOINT_MEDIA_INLINE``)."""

    def __init__(self, state: WorkerState, config: dict[str, Any], on_event: EventHandler,
                 on_lost: LostHandler) -> None:
        from mcu.room import MediaWorker
        from mcu.worker import WorkerService, worker_config

        self.state = state
        self.on_event = on_event
        self.media = MediaWorker(worker_config(config))
        self.pipe_host = config.get("pipe_host", "127.0.0.1")
        self.service = WorkerService(self.media, self._emit)
        self._reporting: asyncio.Task[None] | None = None

    def _emit(self, event: str, data: dict[str, Any]) -> None:
        data = json.loads(json.dumps(data))  # exactly what a process would send
        if event == "load":
            self.state.load = data
        self.on_event(self.state.index, event, data)

    async def start(self) -> None:
        pipe = await self.media.open_pipe(self.pipe_host)
        self.state.pipe = pipe.address
        self.state.pipe_secret = pipe.secret.hex()
        self.state.ready = True
        self._reporting = asyncio.ensure_future(self.service.report_load())

    async def request(self, method: str, params: dict[str, Any], timeout: float) -> Any:
        result = await asyncio.wait_for(
            self.service.handle(method, json.loads(json.dumps(params))), timeout)
        return json.loads(json.dumps(result))

    def counters(self) -> dict[str, int]:
        return self.media.counters.as_dict()  # live: no process boundary to report across

    def kill(self) -> None:
        raise RuntimeError("an inline worker cannot be killed apart from the front")

    async def stop(self) -> None:
        if self._reporting is not None:
            self._reporting.cancel()
        await self.media.close()


class WorkerPool:
    """This node's media workers, and which one takes a participant."""

    def __init__(self, count: int, config: dict[str, Any], *, capacity_units: Sequence[int],
                 on_event: EventHandler, on_lost: LostHandler, inline: bool = False,
                 mixed_room_units: int = 0) -> None:
        kind = InlineWorker if inline else WorkerProcess
        self.workers: list[WorkerProcess | InlineWorker] = [
            kind(WorkerState(index, capacity_units[index], mixed_room_units=mixed_room_units), config,
                 on_event, on_lost)
            for index in range(count)]

    @property
    def states(self) -> list[WorkerState]:
        return [worker.state for worker in self.workers]

    async def start(self) -> None:
        await asyncio.gather(*(worker.start() for worker in self.workers))

    async def stop(self) -> None:
        await asyncio.gather(*(worker.stop() for worker in self.workers))

    async def request(self, index: int, method: str, timeout: float = 20.0,
                      **params: Any) -> Any:
        return await self.workers[index].request(method, params, timeout)

    async def request_all(self, method: str, **params: Any) -> list[Any]:
        """Ask every live worker; a worker that fails to answer contributes None."""
        async def ask(worker: WorkerProcess | InlineWorker) -> Any:
            if not worker.state.ready:
                return None
            try:
                return await worker.request(method, params, 5.0)
            except (ChannelError, TimeoutError):
                return None
        return list(await asyncio.gather(*(ask(worker) for worker in self.workers)))

    def index_of_pipe(self, address: Sequence[Any]) -> int | None:
        wanted = (str(address[0]), int(address[1]))
        return next((s.index for s in self.states if s.ready and s.pipe == wanted), None)

    def place(self, room_workers: Sequence[int], units: int, preferred: int | None = None,
              priority: bool = False, mixed_room: str | None = None) -> int | None:
        """The worker for one more participant of a room; None when all are full.

        The room's own workers first (in order), then the scheduler's choice, then the
        worker with most spare units: a room larger than a worker spans workers. A
        priority (IZS) participant is never refused while a worker runs. ``mixed_room``:
        the participant is mixed in that room (the first one on a worker costs it the
        room's composite too).

        A worker that is not ready (restarting after a crash) is passed over while
        another runs, even the room's own or the scheduler's: its join would wait for the
        restart while others are free, and the room can span the running ones. Only
        when none runs (every worker restarting, or the pool starting) is any taken, in
        the same order, and the join waits for its restart.
        """
        states = self.states
        any_ready = any(state.ready for state in states)

        def usable(state: WorkerState) -> bool:
            return state.ready or not any_ready

        def fits(state: WorkerState) -> bool:
            return usable(state) and state.spare_units >= state.units_for(units, mixed_room)

        own = [index for index in room_workers if usable(states[index])]
        for index in own:
            if fits(states[index]):
                return index
        # The scheduler's worker, for a room not (or no longer) running on any here.
        choice = preferred if preferred is not None and 0 <= preferred < len(states) \
            and usable(states[preferred]) else None
        if choice is not None and not own and fits(states[choice]):
            return choice
        ranked = sorted(states, key=lambda s: (not s.ready, -s.spare_units, s.index))
        if ranked and fits(ranked[0]):
            return ranked[0].index
        if priority and states:
            return own[0] if own else choice if choice is not None else ranked[0].index
        return None

    def reserve(self, index: int, participant: str, units: int, mixed_room: str | None = None) -> None:
        self.workers[index].state.units[participant] = units
        self.set_mixed(index, participant, mixed_room)

    def placement(self, index: int, participant: str) -> tuple[int, str | None]:
        """What the participant is charged on that worker: its units, and the room it is
        mixed in there (None: not mixed)."""
        state = self.workers[index].state
        room = next((name for name, members in state.mixed.items() if participant in members), None)
        return state.units.get(participant, 0), room

    def change(self, index: int, participant: str, units: int, mixed_room: str | None,
               priority: bool = False) -> bool:
        """Charge the participant ``units`` (and ``mixed_room``) on that worker instead of
        what it had: False, and nothing changed, when that fills the worker past its
        capacity (a change that frees units, or a ``priority`` one, always goes)."""
        state = self.workers[index].state
        before, used = self.placement(index, participant), state.used_units
        self.reserve(index, participant, units, mixed_room)
        if priority or state.used_units <= max(used, state.capacity_units):
            return True
        self.reserve(index, participant, *before)
        return False

    def release(self, index: int, participant: str) -> None:
        self.workers[index].state.units.pop(participant, None)
        self.set_mixed(index, participant, None)

    def set_mixed(self, index: int, participant: str, room: str | None) -> None:
        """The participant is mixed in ``room`` on that worker now (None: not mixed)."""
        mixed = self.workers[index].state.mixed
        for name, members in list(mixed.items()):
            if name != room and participant in members:
                members.discard(participant)
                if not members:
                    del mixed[name]  # its last mixed participant here: no composite
        if room is not None:
            mixed.setdefault(room, set()).add(participant)

    def load(self) -> list[dict[str, Any]]:
        """Each worker's last report with its liveness and placed units (operator page)."""
        result = []
        for state in self.states:
            load = state.load
            result.append({"index": state.index, "ready": state.ready, "pid": state.pid,
                           "restarts": state.restarts, "capacity_units": state.capacity_units,
                           "used_units": state.used_units,
                           "rooms": load.get("rooms", 0), "participants": load.get("participants", 0),
                           "cpu": load.get("cpu", 0.0), "packets_per_s": load.get("packets_per_s", 0)})
        return result

    def counters(self) -> dict[str, int]:
        """The packet-path counters of all workers added up (from their last reports)."""
        total: dict[str, int] = {}
        for worker in self.workers:
            for name, value in worker.counters().items():
                total[name] = total.get(name, 0) + int(value)
        return total
