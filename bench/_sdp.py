"""The bench clients' answers, made to say what Chrome's say for simulcast and transport-cc.

aiortc answers neither: it drops the offer's ``a=rid`` / ``a=simulcast`` lines and every
header extension and feedback type it has no table entry for. The bench clients send
their RTP themselves (bench/_clients.py), so what their answer says is only text for
the server to read (mcu/simulcast.py ``answered_layers``, mcu/twcc.py
``answer_transport_cc``); these functions add it to aiortc's answer. Pure functions
over SDP text (CRLF line ends, as aiortc writes and the server expects).
"""

from __future__ import annotations

import re

from mcu import simulcast, twcc

_EXTMAP = re.compile(r"^a=extmap:(\d+)(?:/\w+)? (\S+)$")
_RTPMAP = re.compile(r"^a=rtpmap:(\d+) ([^/]+)/")


def _sections(sdp: str) -> list[list[str]]:
    """The session part, then one list of lines per m-line (no line ends)."""
    sections: list[list[str]] = [[]]
    for line in sdp.replace("\r\n", "\n").rstrip("\n").split("\n"):
        if line.startswith("m="):
            sections.append([])
        sections[-1].append(line)
    return sections


def _join(sections: list[list[str]]) -> str:
    return "".join(line + "\r\n" for section in sections for line in section)


def _mid(section: list[str]) -> str | None:
    return next((line[len("a=mid:"):] for line in section if line.startswith("a=mid:")), None)


def _extension_id(section: list[str], uri: str) -> int:
    for line in section:
        match = _EXTMAP.match(line)
        if match is not None and match.group(2) == uri:
            return int(match.group(1))
    return 0


def _with_attributes(section: list[str], added: list[str]) -> list[str]:
    # After the mid, with the section's other attributes (their order means nothing).
    at = next((i + 1 for i, line in enumerate(section) if line.startswith("a=mid:")), len(section))
    return section[:at] + added + section[at:]


def offered_transport_cc(offer: str) -> int:
    """The transport-cc extension ID the server's offer proposes (0: none)."""
    return max((_extension_id(section, twcc.URI) for section in _sections(offer)[1:]), default=0)


def answer_transport_cc(answer: str, offer: str) -> tuple[str, int]:
    """``answer`` agreeing to the offer's transport-cc, as a browser's does: the extension
    (the offer's ID) and ``rtcp-fb transport-cc`` on each codec but RTX of every accepted
    audio and video section. Returns the answer and the ID (0: not offered, unchanged)."""
    extension_id = offered_transport_cc(offer)
    if not extension_id:
        return answer, 0
    sections = _sections(answer)
    for index, section in enumerate(sections[1:], 1):
        header = section[0][2:].split(" ")
        if header[0] not in ("audio", "video") or header[1] == "0" or _extension_id(section, twcc.URI):
            continue
        added = [f"a=extmap:{extension_id} {twcc.URI}"]
        for line in section:
            match = _RTPMAP.match(line)
            if match is not None and match.group(2).lower() != "rtx":
                added.append(f"a=rtcp-fb:{match.group(1)} transport-cc")
        sections[index] = _with_attributes(section, added)
    return _join(sections), extension_id


def offered_layers(offer: str, mid: str) -> list[str]:
    """The RIDs the offer asks to receive on ``mid`` (``a=rid:X recv``), in its order."""
    for section in _sections(offer)[1:]:
        if _mid(section) == mid and any(line.startswith("a=simulcast:recv ") for line in section):
            return [line.split(":", 1)[1].split(" ")[0] for line in section
                    if line.startswith("a=rid:") and line.endswith(" recv")]
    return []


def answer_simulcast(answer: str, offer: str, mid: str) -> tuple[str, list[str]]:
    """``answer`` sending the layers the offer asks for on ``mid``, as Chrome's does: the
    RID and repaired-RID extensions (the offer's IDs), ``a=rid:X send`` for each and
    ``a=simulcast:send`` naming them, and no ``a=ssrc`` lines (the layers' SSRCs are
    learned from the RID on their packets). Returns the answer and the RIDs (none:
    not asked for, unchanged)."""
    rids = offered_layers(offer, mid)
    if not rids:
        return answer, []
    offer_section = next(s for s in _sections(offer)[1:] if _mid(s) == mid)
    rid_id = _extension_id(offer_section, simulcast.URI_RID)
    repaired_id = _extension_id(offer_section, simulcast.URI_REPAIRED_RID)
    if not rid_id:
        return answer, []
    sections = _sections(answer)
    for index, section in enumerate(sections[1:], 1):
        if _mid(section) != mid:
            continue
        kept = [line for line in section if not line.startswith(("a=ssrc:", "a=ssrc-group:"))]
        added = [f"a=extmap:{rid_id} {simulcast.URI_RID}"]
        if repaired_id:
            added.append(f"a=extmap:{repaired_id} {simulcast.URI_REPAIRED_RID}")
        added += [f"a=rid:{rid} send" for rid in rids]
        added.append("a=simulcast:send " + ";".join(rids))
        sections[index] = _with_attributes(kept, added)
        return _join(sections), rids
    return answer, []
