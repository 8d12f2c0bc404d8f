"""The adapter's contract again on uvloop, the event loop `multipoint serve` runs on."""

from __future__ import annotations

import pytest
import uvloop

from tests.media.test_adapter_contract import (  # noqa: F401  (collected here again)
    echo_call,
    test_error_in_the_packet_path_never_closes_the_receiving_side,
    test_keyframe_request_from_subscriber_reaches_publisher,
    test_legs_send_through_a_sink_bound_while_the_transport_is_connected,
    test_nack_is_answered_from_the_forwarders_history,
    test_no_decoder_runs_on_the_server,
    test_packets_are_forwarded_and_echoed_video_decodes,
)

pytestmark = [pytest.mark.media, pytest.mark.filterwarnings("ignore::pytest.PytestDeprecationWarning")]


@pytest.fixture
def event_loop_policy() -> uvloop.EventLoopPolicy:
    return uvloop.EventLoopPolicy()


async def test_this_module_really_runs_on_uvloop() -> None:
    import asyncio

    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
