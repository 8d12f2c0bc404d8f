"""SDP offers of room units (mcu/unit_sdp.py): what we take, what we answer, what we refuse."""

from __future__ import annotations

import base64

import pytest

from mcu.unit_sdp import LocalStream, SdpError, answer, choose_audio, choose_video, parse_offer

KEY = base64.b64encode(bytes(range(30))).decode()
POLY = ("v=0\r\no=- 1 1 IN IP4 10.1.1.1\r\ns=-\r\nc=IN IP4 10.1.1.1\r\nt=0 0\r\n"
        "m=audio 49170 RTP/SAVP 9 0 8 116 101\r\na=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:116 OPUS/48000/2\r\na=fmtp:116 useinbandfec=1\r\na=rtpmap:101 telephone-event/48000\r\n"
        f"a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:{KEY}|2^31\r\n"
        f"a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{KEY}\r\na=rtcp:49999\r\na=sendrecv\r\n"
        "m=video 49172 RTP/SAVP 109\r\nc=IN IP4 10.1.1.2\r\na=rtpmap:109 H264/90000\r\n"
        "a=fmtp:109 profile-level-id=42e01f;packetization-mode=1\r\n"
        f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}\r\n")


def test_opus_srtp_dtmf_and_h264_are_taken_from_a_room_system_offer() -> None:
    offer = parse_offer(POLY)
    choice = choose_audio(offer)
    assert choice.index == 0 and choice.payload_type == 116 and choice.dtmf_payload_type == 101
    assert choice.remote == ("10.1.1.1", 49170) and choice.remote_rtcp == ("10.1.1.1", 49999)
    assert choice.crypto is not None and choice.crypto.suite == "AES_CM_128_HMAC_SHA1_80"
    video = choose_video(offer)
    assert video is not None and video.index == 1 and video.payload_type == 109
    assert video.remote == ("10.1.1.2", 49172) and video.remote_rtcp == ("10.1.1.2", 49173)
    text = answer(offer, [(choice, LocalStream(40000, 40001, bytes(30)))], "192.0.2.5")
    lines = text.split("\r\n")
    assert "m=audio 40000 RTP/SAVP 116 101" in lines and "a=rtcp:40001 IN IP4 192.0.2.5" in lines
    assert any(line.startswith("a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:") for line in lines)
    assert "m=video 0 RTP/SAVP 109" in lines  # not taken: refused, in its place
    both = answer(offer, [(choice, LocalStream(40000, 40001, bytes(30))),
                          (video, LocalStream(40002, 40003, bytes(30)))], "192.0.2.5").split("\r\n")
    assert "m=video 40002 RTP/SAVP 109" in both
    assert "a=fmtp:109 profile-level-id=42e01f;packetization-mode=1" in both
    assert "a=rtcp-fb:109 nack pli" in both


@pytest.mark.parametrize(("fmtp", "taken"), [
    ("profile-level-id=42e01f;packetization-mode=1", 109),
    ("profile-level-id=640028;packetization-mode=1", None),  # High profile only
    ("profile-level-id=42e01f", 109),  # mode 0: every NAL unit of our composite fits a packet
    ("profile-level-id=42e01f;packetization-mode=2", None),
])
def test_h264_is_taken_in_packetization_mode_1_and_a_baseline_profile(fmtp: str, taken: int | None) -> None:
    offer = parse_offer(POLY.replace("profile-level-id=42e01f;packetization-mode=1", fmtp))
    video = choose_video(offer)
    assert (video.payload_type if video else None) == taken


def test_constrained_baseline_is_preferred_over_other_profiles() -> None:
    sdp = POLY.replace("m=video 49172 RTP/SAVP 109", "m=video 49172 RTP/SAVP 126 109").replace(
        "a=rtpmap:109 H264/90000", "a=rtpmap:126 H264/90000\r\na=fmtp:126 profile-level-id=42001f;"
        "packetization-mode=1\r\na=rtpmap:109 H264/90000")
    video = choose_video(parse_offer(sdp))
    assert video is not None and video.payload_type == 109


def test_without_opus_g722_then_g711_is_taken_static_types_too() -> None:
    no_opus = POLY.replace("a=rtpmap:116 OPUS/48000/2\r\n", "").replace(" 9 0 8 116 101", " 9 0 8 101")
    assert choose_audio(parse_offer(no_opus)).codec == "G722"
    bare = no_opus.replace("a=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\n", "")  # static: no rtpmap
    choice = choose_audio(parse_offer(bare.replace(" 9 0 8 101", " 8 0 101")))
    assert (choice.codec, choice.payload_type) == ("PCMU", 0)


def test_a_unit_that_offers_none_of_ours_is_told_what_it_offered() -> None:
    offer = parse_offer(POLY.replace(" 9 0 8 116 101", " 18 101").replace("a=rtpmap:116 OPUS/48000/2\r\n",
                                                                          "a=rtpmap:18 G729/8000\r\n"))
    with pytest.raises(SdpError) as error:
        choose_audio(offer)
    assert error.value.code == "codec_mismatch" and "G729" in str(error.value) and "Opus" in str(error.value)


def test_srtp_required_with_no_suite_we_take_is_refused() -> None:
    offer = parse_offer(POLY.replace("AES_CM_128_HMAC_SHA1_80", "F8_128_HMAC_SHA1_80")
                        .replace("AES_CM_128_HMAC_SHA1_32", "AEAD_AES_256_GCM"))
    with pytest.raises(SdpError) as error:
        choose_audio(offer)
    assert error.value.code == "codec_mismatch"


@pytest.mark.parametrize("sdp", [
    "", "garbage", "v=0\r\n", "v=0\r\nm=audio x RTP/AVP 0\r\n", "v=0\r\nc=IN IP4 nowhere\r\n",
    "v=0\r\nm=audio 70000 RTP/AVP 0\r\nc=IN IP4 1.2.3.4\r\n",
    "v=0\r\nm=audio 4000 RTP/AVP 0\r\n",  # no address
    "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:x PCMU/8000\r\n",
    "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 4000 RTP/SAVP 0\r\n"
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAAA\r\n",  # a key of the wrong length
    "v=0\r\n" + "a=x\r\n" * 5000,
])
def test_an_offer_that_cannot_be_read_is_bad_sdp(sdp: str) -> None:
    with pytest.raises(SdpError) as error:
        parse_offer(sdp)
    assert error.value.code == "bad_sdp"
