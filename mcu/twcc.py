"""Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-
extensions-01): the offer's lines and the RTCP feedback format's constants.

Every packet sent on a connection that negotiated transport-cc carries a transport-wide
sequence number (header extension :data:`EXTENSION_ID`). The receiver tells the sender,
in RTPFB FMT 15 packets, which numbers arrived and when; the sender matches that with
what it sent and estimates the path's capacity (for us: mcu/congestion.py; for a browser
that publishes to us: its own send-side estimator, fed by our feedback).

The feedback packets are read and made in C (mcu/_fanout.c: ``Inbound``, which takes a
subscriber's out of the decrypted compound for its estimator; ``split_rtcp``,
``parse_feedback``, ``SendSideEstimator.on_packet``, ``Arrivals.feedback``): one arrives from each
subscriber and one goes to each publisher ten times a second, and in Python each cost
more per reported packet than forwarding it. tests/mcu/twcc_reference.py keeps a Python
reading of the format, which the C code is tested against.
"""

from __future__ import annotations

import re

URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
# Not taken by aiortc's offer (mid 1, audio level 2, abs-send-time 3) nor by simulcast's
# rtp-stream-id (10, 11): the same on every connection, as the other IDs are.
EXTENSION_ID = 5

# RTCP feedback packets: RTPFB, FMT 15 (the format is in mcu/_fanout.c).
RTCP_RTPFB = 205
FMT_TRANSPORT_CC = 15


# SDP ----------------------------------------------------------------------------------


def offer_transport_cc(sdp: str) -> str:
    """Our offer with transport-cc in it: the extension in every audio and video section
    and ``rtcp-fb transport-cc`` on each of their codecs but RTX.

    aiortc's own offer has neither (nor could its RTP path use them); we add them to the
    text that goes to the client. aiortc drops them from the answer when it applies it
    (they are not in its tables), so what the client agreed to is read from the answer
    text itself (:func:`answer_transport_cc`).
    """
    lines = sdp.split("\r\n")
    out: list[str] = []
    kind: str | None = None
    rtx: set[str] = set()
    for line in lines:
        if line.startswith("m="):
            kind = line[2:].split(" ", 1)[0]
            rtx = set()
        out.append(line)
        if kind not in ("audio", "video"):
            continue
        if line.startswith("a=mid:"):
            # Extmaps go with the section's other attributes; after the mid is as good
            # a place as any (order within a section carries no meaning).
            out.append(f"a=extmap:{EXTENSION_ID} {URI}")
        elif line.startswith("a=rtpmap:"):
            payload_type, encoding = line[len("a=rtpmap:"):].split(" ", 1)
            if encoding.lower().startswith("rtx/"):
                rtx.add(payload_type)
            else:
                out.append(f"a=rtcp-fb:{payload_type} transport-cc")
    return "\r\n".join(out)


_EXTMAP = re.compile(r"^a=extmap:(\d+)(?:/\w+)? (\S+)", re.MULTILINE)


def answer_transport_cc(sdp: str) -> int:
    """The transport-cc extension ID the answer agreed to, or 0 for none.

    Both are needed: the extension (so packets carry the numbers) and the ``rtcp-fb``
    on a codec of an accepted audio or video section (so each side sends feedback). An
    answer without them (aiortc's, which cannot send transport feedback) leaves the
    connection on REMB.
    """
    extension_id = 0
    feedback = False
    for section in sdp.split("\r\nm=")[1:]:
        header = section.split("\r\n", 1)[0].split(" ")
        if len(header) < 2 or header[0] not in ("audio", "video") or header[1] == "0":
            continue
        for number, uri in _EXTMAP.findall(section.replace("\r\n", "\n")):
            if uri == URI and 0 < int(number) < 15:
                extension_id = int(number)
        if re.search(r"^a=rtcp-fb:\S+ transport-cc\s*$", section, re.MULTILINE):
            feedback = True
    return extension_id if feedback else 0
