"""The control channel (mcu/channel.py) over a real Unix socket pair: a message too
large for a frame fails its own request at once, and the channel goes on."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mcu.channel import MAX_FRAME_BYTES, Channel, ChannelError


async def _answer(method: str, params: dict[str, Any]) -> Any:
    """The worker's side: ``big`` answers more than a frame holds, ``echo`` what it got."""
    if method == "big":
        return {"rooms": ["x" * 1024] * (MAX_FRAME_BYTES // 1024 + 1)}
    if method == "echo":
        return params
    raise ChannelError("unknown_method", f"no method {method!r}")


@pytest.fixture
async def front() -> AsyncIterator[Channel]:
    front_sock, worker_sock = socket.socketpair()
    reader, writer = await asyncio.open_unix_connection(sock=front_sock)
    worker_reader, worker_writer = await asyncio.open_unix_connection(sock=worker_sock)
    front = Channel(reader, writer, name="front")
    worker = Channel(worker_reader, worker_writer, name="worker", on_request=_answer)
    running = [asyncio.ensure_future(front.run()), asyncio.ensure_future(worker.run())]
    yield front
    front.close()
    worker.close()
    await asyncio.gather(*running, return_exceptions=True)


async def test_a_response_over_the_frame_limit_fails_its_request_at_once(front: Channel) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    others = [asyncio.ensure_future(front.request("echo", {"n": n}, timeout=10)) for n in range(3)]
    with pytest.raises(ChannelError) as refused:
        await front.request("big", timeout=10)
    assert refused.value.code == "response_too_large"
    assert "big" in refused.value.message
    assert loop.time() - started < 5  # not the request's timeout
    # The requests around it were answered, and the channel takes more.
    assert await asyncio.gather(*others) == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert await front.request("echo", {"after": True}, timeout=10) == {"after": True}
    assert not front.closed.is_set()


async def test_a_request_over_the_frame_limit_is_refused_before_it_is_sent(front: Channel) -> None:
    with pytest.raises(ChannelError) as refused:
        await front.request("echo", {"sdp": "x" * MAX_FRAME_BYTES}, timeout=10)
    assert refused.value.code == "request_too_large"
    assert await front.request("echo", {"small": 1}, timeout=10) == {"small": 1}
    assert not front.closed.is_set()
