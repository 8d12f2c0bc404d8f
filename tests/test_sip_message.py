"""SIP messages: parsing what units send (and what they should not), framing on streams."""

from __future__ import annotations

import pytest

from signaling.sip.message import (
    SipParseError,
    dialable,
    display_name,
    frame,
    params,
    parse,
    response_to,
    tag_of,
    uri_of,
    user_and_host,
)
from signaling.sip.ua import same_session

INVITE = (b"INVITE sip:mtg-abc@10.0.0.1 SIP/2.0\r\n"
          b"v: SIP/2.0/UDP 10.1.1.1:5060;branch=z9hG4bK1;rport\r\n"
          b"Via: SIP/2.0/UDP proxy:5060;branch=z9hG4bK0, SIP/2.0/TCP p2;branch=z9hG4bKx\r\n"
          b"f: \"Zasedac\\\"i m\xc3\xadstnost\" <sip:unit@10.1.1.1>;tag=aa\r\n"
          b"t: <sip:mtg-abc@10.0.0.1>\r\n"
          b"i: call-1@unit\r\nCSeq: 7 INVITE\r\nSubject: long\r\n folded\r\n"
          b"Content-Type: application/sdp\r\nContent-Length: 5\r\n\r\nv=0\r\nEXTRA")


def test_a_request_with_compact_headers_and_a_folded_line() -> None:
    message = parse(INVITE)
    assert message.method == "INVITE" and message.uri == "sip:mtg-abc@10.0.0.1"
    assert message.call_id == "call-1@unit" and message.cseq == (7, "INVITE")
    assert message.get("Subject") == "long folded"
    assert message.body == b"v=0\r\n"  # Content-Length, not what follows
    assert len(message.get_all("Via")) == 3
    assert params(message.get_all("Via")[0]) == {"branch": "z9hG4bK1", "rport": ""}
    sender = message.get("From")
    assert tag_of(sender) == "aa" and uri_of(sender) == "sip:unit@10.1.1.1"
    assert display_name(sender) == 'Zasedac"i místnost'
    assert user_and_host("sip:mtg%2Dabc@10.0.0.1:5060;transport=tcp") == ("mtg-abc", "10.0.0.1:5060")


def test_a_response_copies_what_rfc_3261_says_and_tags_the_to() -> None:
    response = response_to(parse(INVITE), 486, to_tag="ours")
    text = response.to_bytes()
    assert text.startswith(b"SIP/2.0 486 Busy Here\r\n")
    again = parse(text)
    assert again.get_all("Via") == parse(INVITE).get_all("Via")
    assert tag_of(again.get("To")) == "ours" and again.cseq == (7, "INVITE")


@pytest.mark.parametrize("data", [
    b"", b"\x00\x01\x02", b"INVITE sip:x SIP/2.0\r\n",  # no blank line
    b"INVITE sip:x SIP/3.0\r\nVia: a\r\nFrom: a\r\nTo: a\r\nCall-ID: a\r\nCSeq: 1 INVITE\r\n\r\n",
    b"invite sip:x SIP/2.0\r\nVia: a\r\nFrom: a\r\nTo: a\r\nCall-ID: a\r\nCSeq: 1 INVITE\r\n\r\n",
    b"INVITE sip:x SIP/2.0\r\nVia: a\r\nFrom: a\r\nTo: a\r\nCSeq: 1 INVITE\r\n\r\n",  # no Call-ID
    b"INVITE sip:x SIP/2.0\r\nVia: a\r\nFrom: a\r\nTo: a\r\nCall-ID: a\r\nCSeq: 1 BYE\r\n\r\n",
    b"INVITE sip:x SIP/2.0\r\nVia: a\r\nFrom: a\r\nTo: a\r\nCall-ID: a\r\nCSeq: x INVITE\r\n\r\n",
    b"INVITE sip:x SIP/2.0\r\nVia: a\r\nFrom: a\r\nTo: a\r\nCall-ID: a\r\nCSeq: 1 INVITE\r\n"
    b"Content-Length: 99\r\n\r\nshort",
    b"SIP/2.0 99 Odd\r\nVia: a\r\nFrom: a\r\nTo: a\r\nCall-ID: a\r\nCSeq: 1 INVITE\r\n\r\n",
    b"INVITE sip:x SIP/2.0\r\nVia: a\r\nBad Header: a\r\nFrom: a\r\nTo: a\r\nCall-ID: a\r\n"
    b"CSeq: 1 INVITE\r\n\r\n",
    b"INVITE sip:x SIP/2.0\r\n" + b"X: y\r\n" * 200 + b"\r\n",
    b"OPTIONS sip:x SIP/2.0\r\nVia: \xff\r\n\r\n",
    b"OPTIONS sip:x SIP/2.0\r\nVia: ,\r\nFrom: a\r\nTo: a\r\nCall-ID: a\r\nCSeq: 1 OPTIONS\r\n\r\n",
])
def test_what_is_not_sip_is_refused_with_a_reason(data: bytes) -> None:
    with pytest.raises(SipParseError) as error:
        parse(data)
    assert str(error.value)


def test_a_method_is_any_token_and_kept_as_written() -> None:
    """Methods are case-sensitive (RFC 3261 7.1): a lower-case one is another method, for
    the agent to answer 501, not a message we cannot read."""
    message = parse(b"invite sip:x SIP/2.0\r\nVia: a\r\nFrom: a\r\nTo: a\r\nCall-ID: a\r\n"
                    b"CSeq: 1 invite\r\n\r\n")
    assert message.method == "invite" and message.cseq == (1, "invite")


def test_a_stream_is_cut_into_whole_messages() -> None:
    options = (b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP a;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n"
               b"To: <sip:x@y>\r\nCall-ID: o\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
    buffer = bytearray(b"\r\n\r\n" + INVITE[:40])
    assert frame(buffer) is None  # not all there yet
    buffer = bytearray(b"\r\n" + INVITE.replace(b"EXTRA", b"") + options[:30])
    assert parse(frame(buffer) or b"").method == "INVITE"
    assert frame(buffer) is None
    buffer += options[30:]
    assert parse(frame(buffer) or b"").method == "OPTIONS" and not buffer
    with pytest.raises(SipParseError):  # on a stream, the length must be said
        frame(bytearray(options.replace(b"Content-Length: 0\r\n", b"")))
    with pytest.raises(SipParseError):
        frame(bytearray(b"X" * 70000))


def test_content_length_headers_that_differ_are_refused_by_framing_and_parser_alike() -> None:
    """With two Content-Length headers the stream's framing and the parser must not each
    take another (one cut the message at one, the other read a body of the other); two
    that differ are refused, two that agree are one."""
    head = (b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/TCP a;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n"
            b"To: <sip:x@y>\r\nCall-ID: two\r\nCSeq: 1 INVITE\r\n")
    conflicting = head + b"Content-Length: 0\r\nl: 5\r\n\r\nv=0\r\n"
    for cut in (frame, parse):
        with pytest.raises(SipParseError, match="conflicting Content-Length"):
            cut(bytearray(conflicting) if cut is frame else conflicting)
    agreeing = head + b"Content-Length: 5\r\nl: 5\r\n\r\nv=0\r\n"
    assert parse(frame(bytearray(agreeing)) or b"").body == b"v=0\r\n"


@pytest.mark.parametrize(("offer", "same"), [
    (b"v=0\r\no=- 7 1 IN IP4 10.0.0.1\r\ns=-\r\nm=audio 4000 RTP/AVP 0\r\n", True),
    (b"v=0\r\no=- 7 1 IN IP4 10.0.0.1\r\ns=-\r\nm=audio 5000 RTP/AVP 0\r\n", True),  # the version says
    (b"v=0\r\no=- 7 2 IN IP4 10.0.0.1\r\ns=-\r\nm=audio 4000 RTP/AVP 0\r\na=sendonly\r\n", False),
    (b"v=0\r\no=- 8 1 IN IP4 10.0.0.1\r\ns=-\r\nm=audio 4000 RTP/AVP 0\r\n", False),  # another session
    (b"v=0\r\ns=-\r\nm=audio 4000 RTP/AVP 0\r\n", False),  # no origin, and not the same text
])
def test_a_reinvite_keeps_the_session_when_its_origin_keeps_its_version(offer: bytes, same: bool) -> None:
    known = b"v=0\r\no=- 7 1 IN IP4 10.0.0.1\r\ns=-\r\nm=audio 4000 RTP/AVP 0\r\n"
    assert same_session(offer, known) is same
    assert same_session(known.replace(b"o=- 7 1 IN IP4 10.0.0.1\r\n", b""),
                        known.replace(b"o=- 7 1 IN IP4 10.0.0.1\r\n", b"").replace(b"\r\n", b"\n"))


@pytest.mark.parametrize(("uri", "ok"), [
    ("sip:unit@127.0.0.1:5062", True),
    ("sips:room-12@jednotka.example.cz;transport=tls", True),
    ("sip:10.0.0.5", True),
    ("sip:unit@host\r\nX-Injected: yes", False),  # a header of its own in our INVITE
    ("sip:unit@host\nBye", False),
    ("sip:unit@ho st", False),
    ("sip:unit@host\x00", False),
    ("tel:+420123456789", False),
    ("sip:", False),
    ("sip:unit@" + "a" * 600, False),
])
def test_only_a_printable_sip_uri_is_dialled(uri: str, ok: bool) -> None:
    assert dialable(uri) is ok
