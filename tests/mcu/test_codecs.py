"""The video codec policy (mcu/codecs.py): a room's forwarding codec and each
participant's, and the codecs the server offers for them (mcu/participant.py)."""

from __future__ import annotations

from aiortc import RTCPeerConnection

from mcu import codecs
from mcu.participant import _prefer_codecs


def test_what_a_client_says_it_supports_is_cut_to_what_is_forwarded() -> None:
    assert codecs.supported_codecs(["h264", "av1", "vp8", "h264"]) == ["h264", "vp8"]
    assert codecs.supported_codecs(None) == ["vp8"]  # an older page: VP8, as ever
    assert codecs.supported_codecs(["vp9", "H264"]) == ["vp8"]  # names are the protocol's, lower case


def test_a_room_takes_the_setting_or_its_first_participants_preference() -> None:
    assert codecs.room_codec("vp8", ["h264"]) == "vp8"
    assert codecs.room_codec("h264", ["vp8"]) == "h264"
    assert codecs.room_codec("auto", ["h264", "vp8"]) == "h264"
    assert codecs.room_codec("auto", ["vp8", "h264"]) == "vp8"
    assert codecs.room_codec("auto", []) == "vp8"


def test_a_participant_uses_the_rooms_codec_when_it_can() -> None:
    assert codecs.participant_codec("h264", ["vp8", "h264"]) == "h264"
    assert codecs.participant_codec("h264", ["vp8"]) == "vp8"  # it cannot: its own, kept apart
    assert codecs.participant_codec("vp8", ["h264"]) == "h264"
    # Mixed: the composite is VP8.
    assert codecs.participant_codec("h264", ["h264", "vp8"], "mixed") == "vp8"
    assert codecs.participant_codec("h264", ["h264"], "mixed") == "h264"


async def test_an_offer_holds_one_video_codec_with_its_rtx() -> None:
    pc = RTCPeerConnection()
    try:
        for codec in ("vp8", "h264"):
            transceiver = pc.addTransceiver("video", direction="sendonly")
            _prefer_codecs(transceiver, "video", codec)
        audio = pc.addTransceiver("audio", direction="sendonly")
        _prefer_codecs(audio, "audio", "h264")  # audio is Opus whatever the video codec
        offer = await pc.createOffer()
        sections = offer.sdp.split("\r\nm=")[1:]
        vp8, h264, opus = sections
        assert "VP8/90000" in vp8 and "H264" not in vp8 and "rtx/90000" in vp8
        assert h264.count("H264/90000") == 1 and "VP8" not in h264 and "rtx/90000" in h264
        assert "profile-level-id=42e01f" in h264 and "packetization-mode=1" in h264
        assert "opus/48000" in opus and opus.count("a=rtpmap:") == 1
    finally:
        await pc.close()
