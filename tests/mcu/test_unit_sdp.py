"""SDP offers of room units (mcu/unit_sdp.py): what we take, what we answer, what we refuse."""

from __future__ import annotations

import base64

import pytest

from mcu.mixer.h264 import level_for
from mcu.unit_sdp import (
    MAX_COMPOSITE,
    LocalStream,
    SdpError,
    answer,
    choose_audio,
    choose_video,
    composite_size,
    offer_sdp,
    origin,
    parse_offer,
    rechoose,
    with_origin,
)

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


@pytest.mark.parametrize(("fmtp", "size"), [
    ("profile-level-id=42e01f;packetization-mode=1", (1280, 720)),  # level 3.1: 3600 macroblocks
    ("profile-level-id=42e01e;packetization-mode=1", (640, 360)),  # 3.0: 1620, 960x540 needs 2040
    ("profile-level-id=42e00d;packetization-mode=1", (320, 180)),  # 1.3: CIF's 396
    ("profile-level-id=42e016", (640, 360)),  # 2.2
    ("profile-level-id=42e028;packetization-mode=1", MAX_COMPOSITE),  # 4.0 could take 1080p: capped
    ("profile-level-id=42e00d;max-fs=3600;max-mbps=108000", (1280, 720)),  # more than its level says
    ("profile-level-id=42e01f;max-mbps=20000", (640, 360)),  # 15 fps of 960x540 is 30600 a second
    ("packetization-mode=1", (320, 180)),  # no profile-level-id: baseline level 1 (RFC 6184)
    ("profile-level-id=42f00b", (320, 180)),  # 1b (level 11 with constraint_set3): nothing fits
    ("profile-level-id=42e0zz", (320, 180)),  # unreadable level: the least
])
def test_the_composite_size_is_the_largest_the_units_h264_level_takes(fmtp: str,
                                                                        size: tuple[int, int]) -> None:
    video = choose_video(parse_offer(POLY.replace("profile-level-id=42e01f;packetization-mode=1", fmtp)))
    assert video is not None and video.receive_size == size


def test_a_higher_cap_lets_a_level_4_unit_have_1080p() -> None:
    assert composite_size("profile-level-id=42e028", cap=(1920, 1080)) == (1920, 1080)
    assert composite_size("profile-level-id=42e01f", cap=(1920, 1080)) == (1280, 720)
    level_4 = parse_offer(POLY.replace("profile-level-id=42e01f;packetization-mode=1",
                                       "profile-level-id=42e028;packetization-mode=1"))
    for cap in ((1920, 1080), (640, 360)):  # the operator's sip_composite_max
        video = choose_video(level_4, cap)
        assert video is not None and video.receive_size == cap


@pytest.mark.parametrize(("imageattr", "size"), [
    ("a=imageattr:109 send [x=1280,y=720] recv [x=640,y=360]", (640, 360)),
    ("a=imageattr:* recv [x=[320:16:960],y=[180:16:540]] send *", (960, 540)),
    ("a=imageattr:109 recv [x=1280,y=720,q=0.5] [x=320,y=180]", (1280, 720)),  # the widest set
    ("a=imageattr:109 recv [x=[320,480],y=[180,270]]", (320, 180)),  # 480x270 is not one of ours
    ("a=imageattr:109 recv *", (1280, 720)),
    ("a=imageattr:110 recv [x=320,y=180]", (1280, 720)),  # another payload type's
    ("a=imageattr:109 send [x=320,y=180]", (1280, 720)),  # what it sends: no bound on ours
])
def test_imageattr_recv_bounds_the_composite_size(imageattr: str, size: tuple[int, int]) -> None:
    sdp = POLY.replace("a=rtpmap:109 H264/90000\r\n", f"a=rtpmap:109 H264/90000\r\n{imageattr}\r\n")
    video = choose_video(parse_offer(sdp))
    assert video is not None and video.receive_size == size


@pytest.mark.parametrize(("size", "level"), [((320, 180), 12), ((640, 360), 22), ((960, 540), 31),
                                             ((1280, 720), 31), ((1920, 1080), 40)])
def test_our_stream_says_the_lowest_level_that_takes_its_size(size: tuple[int, int], level: int) -> None:
    # A unit that offered level 1.3 is sent 320x180 at 1.2, never a stream that claims more.
    assert level_for(*size, 15) == level


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


def test_our_offer_has_h264_in_both_packetization_modes_and_a_unit_answering_mode_0_is_taken() -> None:
    ours = offer_sdp("192.0.2.5", {"audio": LocalStream(40000, 40001, None),
                                   "video": LocalStream(40002, 40003, None)})
    assert "m=video 40002 RTP/AVP 96 97" in ours.split("\r\n")
    assert "a=fmtp:97 profile-level-id=42e01f;packetization-mode=0" in ours
    # baresip's answer: mode 0 only, on our payload type for it.
    answered = ("v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 5000 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n"
                "m=video 5002 RTP/AVP 97\r\na=rtpmap:97 H264/90000\r\n"
                "a=fmtp:97 packetization-mode=0;profile-level-id=42e01f\r\n")
    video = choose_video(parse_offer(answered))
    assert video is not None and (video.payload_type, video.packetization_mode) == (97, 0)
    assert video.receive_size == (1280, 720)


def video_answer_lines(sdp: str) -> list[str]:
    offer = parse_offer(sdp)
    audio, video = choose_audio(offer), choose_video(offer)
    assert video is not None
    return answer(offer, [(audio, LocalStream(40000, 40001, bytes(30))),
                          (video, LocalStream(40002, 40003, bytes(30)))], "192.0.2.5").split("\r\n")


@pytest.mark.parametrize(("feedback", "nack"), [
    ("a=rtcp-fb:109 nack\r\na=rtcp-fb:109 nack pli\r\n", True),
    ("a=rtcp-fb:* nack\r\n", True),  # RFC 4585: for every payload type of the m-line
    ("a=rtcp-fb:109   NACK \r\n", True),
    ("a=rtcp-fb:109 nack pli\r\na=rtcp-fb:109 ccm fir\r\n", False),  # baresip 1.0's: PLI only
    ("a=rtcp-fb:110 nack\r\n", False),  # another payload type's
    ("a=rtcp-fb:x nack\r\n", False),  # unreadable: ignored, the call goes on
    ("", False),
])
def test_generic_nack_is_answered_only_to_a_unit_that_offered_it(feedback: str, nack: bool) -> None:
    sdp = POLY.replace("a=rtpmap:109 H264/90000\r\n", f"a=rtpmap:109 H264/90000\r\n{feedback}")
    video = choose_video(parse_offer(sdp))
    assert video is not None and video.nack is nack
    lines = video_answer_lines(sdp)
    assert ("a=rtcp-fb:109 nack" in lines) is nack
    assert "a=rtcp-fb:109 nack pli" in lines and "a=rtcp-fb:109 ccm fir" in lines  # as before


def test_our_offer_has_generic_nack_and_a_units_answer_says_whether_it_takes_it() -> None:
    ours = offer_sdp("192.0.2.5", {"audio": LocalStream(40000, 40001, None),
                                   "video": LocalStream(40002, 40003, None)}).split("\r\n")
    for pt in (96, 97):
        assert f"a=rtcp-fb:{pt} nack" in ours and f"a=rtcp-fb:{pt} nack pli" in ours
    assert not any(line.startswith("a=rtcp-fb:111") for line in ours)  # nothing for sound
    answered = ("v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 5000 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n"
                "m=video 5002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
                "a=fmtp:96 packetization-mode=1;profile-level-id=42e01f\r\na=rtcp-fb:96 nack pli\r\n")
    video = choose_video(parse_offer(answered))
    assert video is not None and not video.nack
    video = choose_video(parse_offer(answered + "a=rtcp-fb:96 nack\r\n"))
    assert video is not None and video.nack


def test_a_new_offer_may_hold_move_and_rekey_a_stream_and_nothing_else() -> None:
    """rechoose(): what a re-INVITE's offer makes of the streams a unit has."""
    first = parse_offer(POLY)
    audio, video = choose_audio(first), choose_video(first)
    assert video is not None
    other_key = base64.b64encode(bytes(range(1, 31))).decode()
    suite = "a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:"
    held = POLY.replace("a=sendrecv", "a=sendonly").replace("m=audio 49170", "m=audio 50170") \
        .replace(suite + KEY, suite + other_key)
    now = rechoose(parse_offer(held), audio)
    assert now.direction == "recvonly" and not now.we_send and now.we_receive
    assert now.remote == ("10.1.1.1", 50170)
    assert now.crypto is not None and now.crypto.key == bytes(range(1, 31))
    assert (now.payload_type, now.codec, now.dtmf_payload_type) == (116, "opus", 101)
    # The video stream stopped (port 0): nothing either way.
    stopped = rechoose(parse_offer(POLY.replace("m=video 49172", "m=video 0")), video)
    assert stopped.direction == "inactive"
    # An m-line added after ours: ours are where they were.
    assert rechoose(parse_offer(POLY + "m=application 9 UDP/BFCP *\r\n"), video).remote == video.remote

    for changed, code in [
        (POLY.replace("OPUS/48000/2", "G722/16000"), "codec_mismatch"),  # payload type 116 is not Opus now
        (POLY.replace("m=audio 49170 RTP/SAVP", "m=audio 49170 RTP/AVP"), "codec_mismatch"),  # profile
        (POLY.replace("a=crypto:2 AES_CM_128_HMAC_SHA1_80", "a=crypto:2 AES_CM_128_HMAC_SHA1_32"),
         "codec_mismatch"),  # only the 32-bit tag now: another SRTP suite
        (POLY.replace("a=rtcp:49999\r\n", "a=rtcp-mux\r\n"), "bad_sdp"),  # muxing turned on
        ("v=0\r\no=- 1 2 IN IP4 10.1.1.1\r\ns=-\r\nc=IN IP4 10.1.1.1\r\nt=0 0\r\n"
         "m=video 49172 RTP/AVP 109\r\na=rtpmap:109 H264/90000\r\n", "bad_sdp"),  # the audio m-line gone
    ]:
        with pytest.raises(SdpError) as refused:
            rechoose(parse_offer(changed), audio)
        assert refused.value.code == code


def test_a_later_answer_keeps_the_session_id_and_counts_the_version_up() -> None:
    offer = parse_offer(POLY)
    ours = answer(offer, [(choose_audio(offer), LocalStream(40000, 40001, bytes(30)))], "192.0.2.5")
    session_id, version = origin(ours)
    later = with_origin(ours, session_id, version + 1)
    assert origin(later) == (session_id, version + 1)
    assert later.split("\r\n")[2:] == ours.split("\r\n")[2:]
    with pytest.raises(SdpError):
        origin("v=0\r\ns=-\r\n")


@pytest.mark.parametrize("lines", ["a=ptime:20.0\r\na=maxptime:40.5\r\n", "a=ptime:twenty\r\n"])
def test_a_packet_time_that_is_not_a_whole_number_costs_no_call(lines: str) -> None:
    """RFC 4566 6 lets a=ptime (and a=maxptime) be a fraction; we send 20 ms packets
    whatever it says, so neither that nor an odd value refuses the offer."""
    offer = parse_offer(POLY.replace("a=sendrecv\r\n", "a=sendrecv\r\n" + lines))
    assert choose_audio(offer).payload_type == 116
    assert offer.media[0].ptime == (20.0 if "20.0" in lines else None)
