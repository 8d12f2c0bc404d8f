"""SIP messages (RFC 3261 section 7): parsing, framing on streams, and writing.

Only what a user agent for room units needs: a request or response line, headers (with
the compact forms), and a body whose length ``Content-Length`` gives. Anything that does
not parse raises :class:`SipParseError` with a reason a 400 response can carry.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field

MAX_MESSAGE_BYTES = 64 * 1024  # far over any INVITE with SDP a room unit sends
MAX_HEADERS = 100
VERSION = "SIP/2.0"
BRANCH_MAGIC = "z9hG4bK"  # RFC 3261 17.2.3: a branch made by a compliant agent

# RFC 3261 7.3.3 and the extensions that define compact forms.
COMPACT = {"i": "call-id", "m": "contact", "e": "content-encoding", "l": "content-length",
           "c": "content-type", "f": "from", "s": "subject", "k": "supported", "t": "to",
           "v": "via", "o": "event", "r": "refer-to", "u": "allow-events"}
# How headers are written (and what a lower-case name reads back as).
CANONICAL = {"call-id": "Call-ID", "cseq": "CSeq", "www-authenticate": "WWW-Authenticate",
             "mime-version": "MIME-Version"}

REASONS = {100: "Trying", 180: "Ringing", 200: "OK", 400: "Bad Request", 403: "Forbidden",
           404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
           413: "Request Entity Too Large", 415: "Unsupported Media Type",
           420: "Bad Extension", 480: "Temporarily Unavailable",
           481: "Call/Transaction Does Not Exist", 486: "Busy Here", 487: "Request Terminated",
           488: "Not Acceptable Here", 491: "Request Pending", 500: "Server Internal Error",
           501: "Not Implemented", 503: "Service Unavailable", 603: "Decline"}

_TOKEN = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")
_URI_USER = re.compile(r"^sips?:(?:([^@;?>]*)@)?([^;?>]+)", re.IGNORECASE)


class SipParseError(ValueError):
    """A message that is not SIP, or not SIP we can read; the text says why."""


def header_name(name: str) -> str:
    """The canonical (written) form of a header name, compact forms expanded."""
    lower = name.strip().lower()
    lower = COMPACT.get(lower, lower)
    return CANONICAL.get(lower, "-".join(part.capitalize() for part in lower.split("-")))


@dataclass
class SipMessage:
    """A request (``method`` and ``uri``) or a response (``status`` and ``reason``)."""

    method: str = ""
    uri: str = ""
    status: int = 0
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)  # canonical name, value
    body: bytes = b""

    @property
    def is_request(self) -> bool:
        return bool(self.method)

    def get(self, name: str, default: str = "") -> str:
        wanted = header_name(name)
        for key, value in self.headers:
            if key == wanted:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        wanted = header_name(name)
        values: list[str] = []
        for key, value in self.headers:
            if key == wanted:
                # Via, Record-Route, Route...: one header may hold several, comma-separated.
                values += [part.strip() for part in _split_commas(value)] if wanted in (
                    "Via", "Record-Route", "Route") else [value]
        return values

    def set(self, name: str, value: str) -> None:
        wanted = header_name(name)
        self.headers = [(k, v) for k, v in self.headers if k != wanted]
        self.headers.append((wanted, value))

    def add(self, name: str, value: str) -> None:
        self.headers.append((header_name(name), value))

    @property
    def call_id(self) -> str:
        return self.get("Call-ID")

    @property
    def cseq(self) -> tuple[int, str]:
        """(number, method) of the CSeq header; SipParseError when it is not one. The
        method as written: methods are case-sensitive (RFC 3261 7.1)."""
        parts = self.get("CSeq").split()
        if len(parts) != 2 or not parts[0].isdigit() or len(parts[0]) > 10:
            raise SipParseError("bad CSeq header")
        return int(parts[0]), parts[1]

    def to_bytes(self) -> bytes:
        first = f"{self.method} {self.uri} {VERSION}" if self.is_request \
            else f"{VERSION} {self.status} {self.reason}"
        headers = [(k, v) for k, v in self.headers if k != "Content-Length"]
        lines = [first, *(f"{k}: {v}" for k, v in headers), f"Content-Length: {len(self.body)}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body


def _split_commas(value: str) -> list[str]:
    """Split a header value at commas outside quotes and angle brackets."""
    parts, depth, quoted, start = [], 0, False, 0
    for i, ch in enumerate(value):
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            depth += 1
        elif not quoted and ch == ">":
            depth = max(0, depth - 1)
        elif not quoted and depth == 0 and ch == ",":
            parts.append(value[start:i])
            start = i + 1
    parts.append(value[start:])
    return [p for p in parts if p.strip()]


def parse(data: bytes) -> SipMessage:
    """One whole message (a datagram, or what :func:`frame` cut from a stream)."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise SipParseError("message too large")
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        head, separator, body = data.partition(b"\n\n")  # bare LF, tolerated (RFC 3261 7.5)
        if not separator:
            raise SipParseError("no blank line after the headers")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError("headers are not UTF-8") from None
    lines = text.replace("\r\n", "\n").split("\n")
    while lines and not lines[0]:  # keep-alive CRLFs before a message
        lines.pop(0)
    if not lines:
        raise SipParseError("empty message")
    message = _start_line(lines[0])
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):  # a folded continuation line
            if not message.headers:
                raise SipParseError("continuation line before any header")
            name, value = message.headers[-1]
            message.headers[-1] = (name, value + " " + line.strip())
            continue
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.match(name.strip()):
            raise SipParseError(f"bad header line {line[:40]!r}")
        message.headers.append((header_name(name), value.strip()))
        if len(message.headers) > MAX_HEADERS:
            raise SipParseError("too many headers")
    for required in ("Via", "From", "To", "Call-ID", "CSeq"):
        if not message.get(required):
            raise SipParseError(f"no {required} header")
    if not message.get_all("Via"):  # "Via: ," names no hop: nowhere a response could go
        raise SipParseError("no Via header")
    _, method = message.cseq
    if message.is_request and method != message.method and message.method not in ("ACK", "CANCEL"):
        raise SipParseError("CSeq method differs from the request's")
    length = _one_length(message.get_all("Content-Length"))
    if length is not None:
        if length > len(body):
            raise SipParseError("Content-Length says more than the message holds")
        body = body[:length]
    message.body = body
    return message


def _start_line(line: str) -> SipMessage:
    parts = line.split(" ", 2)
    if len(parts) != 3:
        raise SipParseError("bad start line")
    if parts[0] == VERSION:
        if not (parts[1].isdigit() and len(parts[1]) == 3 and 100 <= int(parts[1]) <= 699):
            raise SipParseError("bad status code")
        return SipMessage(status=int(parts[1]), reason=parts[2])
    method, uri, version = parts
    if version != VERSION:
        raise SipParseError(f"unsupported version {version[:20]!r}")
    # Any token: an extension method, or one in lower case (another method, methods being
    # case-sensitive: RFC 3261 7.1), is for the agent to answer 501 with Allow.
    if not _TOKEN.match(method):
        raise SipParseError("bad method")
    if not uri or " " in uri:
        raise SipParseError("bad Request-URI")
    return SipMessage(method=method, uri=uri)


def frame(buffer: bytearray) -> bytes | None:
    """Cut the first whole message off a stream buffer (TCP, TLS): its headers and as
    many body bytes as Content-Length says (RFC 3261 18.3: required on streams). None
    when it is not all there yet; SipParseError when it never can be."""
    while buffer[:2] == b"\r\n":  # keep-alive (RFC 5626 3.5.1)
        del buffer[:2]
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > MAX_MESSAGE_BYTES:
            raise SipParseError("headers too long")
        return None
    head = bytes(buffer[:end]).decode("utf-8", "replace")
    lengths: list[str] = []
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if header_name(name) == "Content-Length":
            lengths.append(value.strip())
    length = _one_length(lengths)
    if length is None:
        raise SipParseError("no Content-Length on a stream")
    total = end + 4 + length
    if total > MAX_MESSAGE_BYTES:
        raise SipParseError("message too large")
    if len(buffer) < total:
        return None
    data = bytes(buffer[:total])
    del buffer[:total]
    return data


def _one_length(values: list[str]) -> int | None:
    """The body's length that the Content-Length headers say; None without one. Two that
    differ are refused: the stream's framing and the parser would each believe another,
    and what the unit meant cannot be known (a message smuggled in a body, say)."""
    if not values:
        return None
    if any(not (value.isascii() and value.isdigit()) or len(value) > 10 for value in values):
        raise SipParseError("bad Content-Length")
    if len({int(value) for value in values}) > 1:
        raise SipParseError("conflicting Content-Length headers")
    return int(values[0])


# Parts of headers -----------------------------------------------------------------------


def params(value: str) -> dict[str, str]:
    """The ;name=value parameters after a header's main part (outside <...>)."""
    close = value.rfind(">")
    tail = value[close + 1:] if close >= 0 else value.partition(";")[2]
    found: dict[str, str] = {}
    for part in tail.split(";"):
        name, _, val = part.strip().partition("=")
        if name:
            found[name.lower()] = val.strip().strip('"')
    return found


def tag_of(value: str) -> str:
    return params(value).get("tag", "")


def uri_of(value: str) -> str:
    """The URI of a From/To/Contact value (``"Name" <sip:x@y>;tag=1`` or ``sip:x@y;tag=1``)."""
    start = value.find("<")
    if start >= 0:
        end = value.find(">", start)
        return value[start + 1:end if end > 0 else None].strip()
    return value.split(";")[0].strip()


def display_name(value: str) -> str:
    start = value.find("<")
    if start <= 0:
        return ""
    name = value[:start].strip()
    return name[1:-1].replace('\\"', '"') if len(name) >= 2 and name[0] == name[-1] == '"' else name


def user_and_host(uri: str) -> tuple[str, str]:
    """The user part (unescaped) and host[:port] of a sip: or sips: URI."""
    match = _URI_USER.match(uri.strip())
    if match is None:
        raise SipParseError("not a sip: URI")
    user = re.sub(r"%([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), match.group(1) or "")
    return user, match.group(2)


def dialable(uri: str) -> bool:
    """Whether ``uri`` can be the Request-URI and To of an INVITE we send: a sip: or sips:
    URI with a host, printable, with no whitespace. Whatever calls a unit (an operator's
    form, a booking, a test call) gets here: a CR or LF would put headers of its own into
    our request."""
    if len(uri) > 512 or not uri.isprintable() or any(ch.isspace() for ch in uri):
        return False
    try:
        return bool(user_and_host(uri)[1])
    except SipParseError:
        return False


def new_tag() -> str:
    return secrets.token_hex(8)


def new_branch() -> str:
    return BRANCH_MAGIC + secrets.token_hex(10)


def response_to(request: SipMessage, status: int, reason: str = "", to_tag: str = "") -> SipMessage:
    """A response with the request's Via, From, To (tagged), Call-ID and CSeq (RFC 3261 8.2.6.2)."""
    response = SipMessage(status=status, reason=reason or REASONS.get(status, "Unknown"))
    for via in request.get_all("Via"):
        response.add("Via", via)
    response.add("From", request.get("From"))
    to = request.get("To")
    if to_tag and not tag_of(to) and status > 100:
        to += f";tag={to_tag}"
    response.add("To", to)
    response.add("Call-ID", request.call_id)
    response.add("CSeq", request.get("CSeq"))
    return response
