"""The control channel between the front process and a media worker (docs/workers.md).

One stream (a Unix socket pair) per worker carries frames: a 4-byte big-endian length,
then that many bytes of UTF-8 JSON holding one object. An object is a *request*
(``{"id", "method", "params"}``), the *response* to one (``{"id", "result"}`` or
``{"id", "error": {"code", "message"}}``), or an *event* (``{"event", ...}``) that needs
no answer. Either side may send requests; in practice the front asks and the worker
answers and reports events.

A malformed frame (bad JSON, not an object, too long) is logged, counted and refused
with an error response where it carried an id; the channel goes on. Only the end of
the stream (the peer died) ends it.

A message that cannot be framed (over MAX_FRAME_BYTES, or not JSON) is never written:
a request fails at once at its sender (``request_too_large``), and a response is
replaced by an error response for the same id (``response_too_large``), so the
requester learns why at once instead of waiting out its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import struct
from collections.abc import Awaitable, Callable
from typing import Any

logger = logging.getLogger(__name__)

MAX_FRAME_BYTES = 4 * 1024 * 1024  # a room list of hundreds of participants fits easily
HEADER = struct.Struct(">I")

RequestHandler = Callable[[str, dict[str, Any]], Awaitable[Any]]
EventHandler = Callable[[str, dict[str, Any]], None]


class ChannelError(Exception):
    """A request was refused by the other side, or the channel closed under it."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ChannelClosed(ChannelError):
    def __init__(self) -> None:
        super().__init__("worker_gone", "the media worker is not running")


class FrameTooLarge(ValueError):
    """A message whose JSON is over MAX_FRAME_BYTES: the other side would close on it."""

    def __init__(self, size: int) -> None:
        super().__init__(f"a control message of {size} bytes is over the limit of "
                         f"{MAX_FRAME_BYTES}")
        self.size = size


def encode(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    if len(body) > MAX_FRAME_BYTES:
        raise FrameTooLarge(len(body))
    return HEADER.pack(len(body)) + body


class Channel:
    """Requests with ids, their responses, and events, over one stream pair."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                 name: str, on_request: RequestHandler | None = None,
                 on_event: EventHandler | None = None) -> None:
        self.name = name
        self._reader, self._writer = reader, writer
        self._on_request = on_request
        self._on_event = on_event
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._handling: set[asyncio.Task[None]] = set()
        self.malformed = 0  # frames refused: for tests and the operator's counters
        self.closed = asyncio.Event()
        # When the other side last sent a frame (loop time): a peer that went silent
        # (stopped, hung) is noticed by its owner (mcu/pool.py), not by the stream.
        self.last_received = asyncio.get_running_loop().time()

    async def run(self) -> None:
        """Read frames until the stream ends; then fail whatever still waits."""
        try:
            while True:
                try:
                    header = await self._reader.readexactly(HEADER.size)
                    (length,) = HEADER.unpack(header)
                    if length > MAX_FRAME_BYTES:
                        # The stream cannot be resynchronised past a lying length.
                        logger.error("%s: control frame of %d bytes: closing", self.name, length)
                        self.malformed += 1
                        break
                    body = await self._reader.readexactly(length)
                except (asyncio.IncompleteReadError, ConnectionError):
                    break  # the other side is gone (a truncated last frame included)
                self.last_received = asyncio.get_running_loop().time()
                self._dispatch(body)
        finally:
            self._close()

    def _dispatch(self, body: bytes) -> None:
        try:
            message = json.loads(body)
            if not isinstance(message, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as exc:
            self.malformed += 1
            logger.error("%s: malformed control message refused (%s): %r", self.name, exc,
                         body[:200])
            return
        if "event" in message:
            event = message.pop("event")
            if self._on_event is not None and isinstance(event, str):
                try:
                    self._on_event(event, message)
                except Exception:
                    logger.exception("%s: handling event %r failed", self.name, event)
            return
        request_id = message.get("id")
        if not isinstance(request_id, int) or not (
                "method" in message or "result" in message or "error" in message):
            self.malformed += 1
            logger.error("%s: control message refused (no id, or neither a request nor a "
                         "response): %r", self.name, body[:200])
            return
        if "method" in message:
            task = asyncio.ensure_future(self._answer(request_id, message))
            self._handling.add(task)
            task.add_done_callback(self._handling.discard)
            return
        future = self._waiting.pop(request_id, None)
        if future is None or future.done():
            return  # the requester gave up (timed out) meanwhile
        error = message.get("error")
        if isinstance(error, dict):
            future.set_exception(ChannelError(str(error.get("code", "error")),
                                              str(error.get("message", ""))))
        else:
            future.set_result(message.get("result"))

    async def _answer(self, request_id: int, message: dict[str, Any]) -> None:
        method, params = message.get("method"), message.get("params", {})
        if self._on_request is None or not isinstance(method, str) or not isinstance(params, dict):
            self.malformed += 1
            logger.error("%s: request %s refused: no method or params", self.name, request_id)
            self._send({"id": request_id, "error": {"code": "bad_request",
                                                     "message": "need 'method' and 'params'"}})
            return
        try:
            result = await self._on_request(method, params)
        except ChannelError as exc:
            self._send({"id": request_id, "error": {"code": exc.code, "message": exc.message}})
        except Exception as exc:
            logger.exception("%s: request %s failed", self.name, method)
            self._send({"id": request_id, "error": {"code": "internal_error",
                                                     "message": f"{method} failed: {exc!r}"}})
        else:
            self._respond(request_id, method, result)

    def _respond(self, request_id: int, method: str, result: Any) -> None:
        """Send the result, or, when it cannot be framed, an error in its place: the
        requester must hear of it now, not at its timeout."""
        try:
            frame = encode({"id": request_id, "result": result})
        except FrameTooLarge as exc:
            logger.error("%s: the response to %s is %d bytes, over the limit: refused",
                         self.name, method, exc.size)
            self._send({"id": request_id, "error": {
                "code": "response_too_large",
                "message": f"the response to {method} is {exc.size} bytes, over the "
                           f"channel's limit of {MAX_FRAME_BYTES}"}})
        except (TypeError, ValueError) as exc:
            logger.exception("%s: the response to %s could not be encoded", self.name, method)
            self._send({"id": request_id, "error": {
                "code": "internal_error",
                "message": f"the response to {method} could not be encoded: {exc}"}})
        else:
            self._write(frame)

    async def request(self, method: str, params: dict[str, Any] | None = None,
                      timeout: float = 20.0) -> Any:
        if self.closed.is_set():
            raise ChannelClosed()
        request_id = next(self._ids)
        # Framed before it waits: a request that cannot be sent fails now, not at its
        # timeout (one over the limit would also make the other side close the stream).
        try:
            frame = encode({"id": request_id, "method": method, "params": params or {}})
        except FrameTooLarge as exc:
            raise ChannelError("request_too_large", f"the request {method} is {exc.size} "
                               f"bytes, over the channel's limit of {MAX_FRAME_BYTES}") from None
        except (TypeError, ValueError) as exc:
            raise ChannelError("bad_request", f"the request {method} could not be encoded: "
                               f"{exc}") from None
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        self._write(frame)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._waiting.pop(request_id, None)

    def emit(self, event: str, data: dict[str, Any]) -> None:
        self._send({"event": event, **data})

    def _send(self, message: dict[str, Any]) -> None:
        try:
            frame = encode(message)
        except (TypeError, ValueError):
            logger.exception("%s: control message could not be encoded", self.name)
            return
        self._write(frame)

    def _write(self, frame: bytes) -> None:
        if self.closed.is_set() or self._writer.is_closing():
            return
        self._writer.write(frame)

    def _close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(ChannelClosed())
        self._waiting.clear()
        with contextlib.suppress(Exception):
            self._writer.close()

    def close(self) -> None:
        self._close()
