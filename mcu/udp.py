"""A UDP socket the event loop only watches, read in C.

The loop's own datagram transport takes each received datagram through its protocol
call, an address tuple and our Python handler before any C. Here a
:class:`mcu._fanout.Reader` reads what is queued with one ``recvmmsg`` a wake-up: the
media it is told about (an ICE connection's keyed SRTP, a pipe's RTP from the workers
it knows) goes straight to the C packet path, everything else to the protocol's
``datagram_received(data, addr)``, as the loop's transport would hand it.

A socket whose packets are only used on a clock of their own (a mixed participant's,
whose sound waits in the mixer's jitter buffer for the next 20 ms tick anyway) can be
read on that clock instead (:meth:`CReadTransport.read_on_tick`): the loop stops
watching it and the owner calls ``reader.drain()`` each tick. A datagram then costs
no wake-up of the process of its own (docs/mixer.md has what that saves); the kernel's
receive time of each is kept, so jitter and transport-cc arrivals are measured as if
it had been read at once.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

from mcu._fanout import Reader

logger = logging.getLogger(__name__)


class CReadTransport(asyncio.DatagramTransport):
    """``sock`` (bound, non-blocking) for ``protocol``, read by :attr:`reader`.

    Sends go out directly; a full send buffer drops the datagram, as UDP may, and any
    other send error goes to the protocol's ``error_received``.
    """

    def __init__(self, sock: socket.socket, protocol: asyncio.DatagramProtocol) -> None:
        super().__init__()
        self._loop = asyncio.get_running_loop()
        self._sock = sock
        self._protocol = protocol
        self._closing = False
        self.reader = Reader(sock.fileno(), protocol.datagram_received, self._on_error)
        self._loop.add_reader(sock.fileno(), self.reader.readable)
        self.on_tick = False  # read by its owner's drain() calls, not on the loop's wake-ups

    def read_on_tick(self, on: bool) -> None:
        """Stop (``on``) or resume the loop's watch of the socket. While off, the caller
        must call ``reader.drain()`` often (each 20 ms tick): nothing else reads it."""
        if on == self.on_tick or self._closing:
            return
        if on:
            self.reader.stamp_arrivals()
            self._loop.remove_reader(self._sock.fileno())
        else:  # the loop's readiness is level-triggered: what is queued is read at once
            self._loop.add_reader(self._sock.fileno(), self.reader.readable)
        self.on_tick = on

    def _on_error(self, exc: BaseException) -> None:
        logger.error("UDP socket %s: error handling a datagram: %r", self._sock.getsockname(), exc)

    def sendto(self, data: bytes | bytearray | memoryview, addr: Any = None) -> None:
        if self._closing:
            return
        try:
            self._sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            pass  # a full send buffer: dropped, as UDP may
        except OSError as exc:
            self._protocol.error_received(exc)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket":
            return self._sock
        if name == "sockname":
            return self._sock.getsockname()
        return default

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._loop.remove_reader(self._sock.fileno())
        self.reader.close()
        self._sock.close()
        self._loop.call_soon(self._protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol
