"""bench.sfu --simulcast: the bench's clients publish three layers and use transport-cc,
as Chrome does, and the real server takes them so (no timing asserts)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import _sdp
from mcu import simulcast, twcc

REPOSITORY = Path(__file__).resolve().parents[2]

# The parts of a server offer and an aiortc answer that matter here (aiortc's answer
# carries neither the layers nor transport-cc).
OFFER = "\r\n".join([
    "v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=group:BUNDLE 0 1",
    "m=audio 9 UDP/TLS/RTP/SAVPF 96", "c=IN IP4 0.0.0.0", "a=recvonly", "a=mid:0",
    f"a=extmap:{twcc.EXTENSION_ID} {twcc.URI}", "a=rtpmap:96 opus/48000/2",
    "a=rtcp-fb:96 transport-cc",
    "m=video 9 UDP/TLS/RTP/SAVPF 97 98", "c=IN IP4 0.0.0.0", "a=recvonly", "a=mid:1",
    f"a=extmap:{twcc.EXTENSION_ID} {twcc.URI}", "a=rtpmap:97 VP8/90000", "a=rtcp-fb:97 transport-cc",
    "a=rtpmap:98 rtx/90000", "a=fmtp:98 apt=97",
    f"a=extmap:{simulcast.EXT_RID} {simulcast.URI_RID}",
    f"a=extmap:{simulcast.EXT_REPAIRED_RID} {simulcast.URI_REPAIRED_RID}",
    "a=rid:q recv", "a=rid:h recv", "a=rid:f recv", "a=simulcast:recv q;h;f", ""])
ANSWER = "\r\n".join([
    "v=0", "o=- 2 2 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=group:BUNDLE 0 1",
    "m=audio 9 UDP/TLS/RTP/SAVPF 96", "c=IN IP4 0.0.0.0", "a=sendonly", "a=mid:0",
    "a=rtpmap:96 opus/48000/2", "a=ssrc:111 cname:x",
    "m=video 9 UDP/TLS/RTP/SAVPF 97 98", "c=IN IP4 0.0.0.0", "a=sendonly", "a=mid:1",
    "a=rtpmap:97 VP8/90000", "a=rtpmap:98 rtx/90000", "a=fmtp:98 apt=97",
    "a=ssrc-group:FID 222 333", "a=ssrc:222 cname:x", "a=ssrc:333 cname:x", ""])


def test_the_answer_says_what_the_server_reads_for_layers_and_transport_cc() -> None:
    sdp, extension_id = _sdp.answer_transport_cc(ANSWER, OFFER)
    assert extension_id == twcc.EXTENSION_ID
    sdp, rids = _sdp.answer_simulcast(sdp, OFFER, "1")
    assert rids == ["q", "h", "f"]
    # The server's own readers of an answer (mcu/participant.py accept_answer).
    assert twcc.answer_transport_cc(sdp) == twcc.EXTENSION_ID
    assert simulcast.answered_layers(sdp, "1") == ["q", "h", "f"]
    assert simulcast.answered_layers(sdp, "0") == []
    video = sdp.split("m=video", 1)[1]
    assert "a=ssrc" not in video and "a=ssrc:111" in sdp  # the layers' SSRCs come from their RIDs
    assert "a=rtcp-fb:97 transport-cc" in video and "a=rtcp-fb:98" not in video  # not on RTX
    # Not asked for: unchanged.
    assert _sdp.answer_simulcast(ANSWER, OFFER, "0") == (ANSWER, [])
    plain_offer = OFFER.replace(f"a=extmap:{twcc.EXTENSION_ID} {twcc.URI}\r\n", "")
    assert _sdp.answer_transport_cc(ANSWER, plain_offer) == (ANSWER, 0)


@pytest.mark.media
def test_a_tiny_simulcast_bench_through_the_real_server() -> None:
    # The real service as a process; one publisher with three layers, two subscribers.
    done = subprocess.run([sys.executable, "-m", "bench.sfu", "--simulcast", "--publishers", "1",
                           "--subscribers", "2", "--seconds", "2", "--warmup", "0.5",
                           "--idle-seconds", "0", "--naive-subscribers", "0"],
                          cwd=REPOSITORY, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["mode"] == "simulcast"
    layers = result["simulcast"]
    assert layers["layers_answered"] == ["q,h,f"]
    # The server's receiver reports to the publisher cover all three layers' SSRCs: it
    # learned each by its RID.
    assert layers["layers_learned_by_server_min"] == 3
    # Both subscribers got the publisher's video (the top layer) through the window.
    assert result["video_received_min_ratio"] > 0.9 and result["loss_ratio_video"] < 0.1
    assert result["legs_never_matched"] == 0
    # transport-cc both ways: every forwarded packet stamped, feedback from the subscribers
    # (the server's estimator runs on it) and from the server to the publisher.
    assert layers["transport_cc_clients"] == 3
    assert layers["subscriber_packets_stamped_ratio"] == 1.0
    assert layers["transport_feedback_sent_by_subscribers"] > 0
    assert layers["transport_feedback_received_by_publishers"] > 0
    assert result["forwarded_pps"] > 0 and result["server_cpu_us_per_packet"] > 0
    assert result["server_wakeups_per_s"] > 0  # read from /proc for every server process
