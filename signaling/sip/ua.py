"""A small SIP user agent server for room units: UDP and TCP, INVITE dialogs.

It takes the subset of RFC 3261 a room system uses to call a multipoint: INVITE with an
SDP offer (answered in the 200), ACK, BYE either way, CANCEL, re-INVITE (a session
refresh, answered with the session as it is; a new offer, hold or a new address, goes to
the application, which answers it or refuses it with 488, and then the call goes on as
it was; cancelled before that answer, it gets 487 and the call goes on as it was too),
INFO with keys, OPTIONS (keep-alive and capability queries); a method of SIP's that
we do not take (REGISTER, SUBSCRIBE, UPDATE...) gets 405 with ``Allow``, any other
method 501 with ``Allow``. docs/sip.md says why this is our own and not a SIP stack's.

Transactions, as far as a UAS needs them (RFC 3261 17.2): a retransmitted request gets
the last response again; a 2xx to an INVITE or re-INVITE is retransmitted on every
transport (T1 doubling to T2) until its ACK comes, and a call whose ACK has not come in
64*T1 is hung up (13.3.1.4, 14.2); a final refusal of an INVITE is retransmitted over
UDP the same way until its ACK (the INVITE's own branch) comes, for 64*T1 at most
(17.2.1, timer H); a BYE we send is retransmitted over UDP until answered, and over
TCP or TLS goes on a new connection to the unit (its address, its Contact's port) when
its own has closed (18.1.1), as our ACK does when a unit sends its 200 again; a
unit's refusal of our INVITE is ACKed, over UDP each copy of it for timer D (17.1.1.2).
Responses go back where the request came from (the source address, as RFC 3581 rport
does), which is what a unit behind a NAT needs; over TCP or TLS, once the unit closed
the request's connection, over a new one to the port of its Via's sent-by (18.2.2).

What to do with a call is the application's (:class:`Calls`): it gets each new INVITE
and says how to answer, and hears of each hang-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.parser
import email.policy
import logging
import random
import re
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from signaling.sip.message import (
    BRANCH_MAGIC,
    MAX_MESSAGE_BYTES,
    SipMessage,
    SipParseError,
    dialable,
    frame,
    new_branch,
    new_tag,
    params,
    parse,
    response_to,
    tag_of,
    uri_of,
    user_and_host,
)

logger = logging.getLogger(__name__)

T1_S = 0.5
T2_S = 4.0
TRANSACTION_S = 64 * T1_S  # timer B/H: how long a transaction may wait for its end
TIMER_D_S = 32.0  # RFC 3261 timer D: how long our ACK of a refusal answers its copies (UDP)
CLOSE_BYE_S = 4 * T1_S  # on closing, how long the calls' BYEs are waited for
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO"
# The bodies an INVITE may carry its offer in: SDP, or SDP as a part of multipart/mixed
# (RFC 5621); OPTIONS says so, and an INVITE in another body is refused with it.
ACCEPTED_BODIES = "application/sdp, multipart/mixed"
# Keys sent in SIP INFO (units that do not send RFC 4733 events in their RTP): the de facto
# application/dtmf-relay body ("Signal=5\r\nDuration=160") and application/dtmf ("5").
DTMF_INFO_TYPES = ("application/dtmf-relay", "application/dtmf")
DTMF_KEYS = "0123456789*#ABCD"
RING_S = 45.0  # a unit we call that does not answer in this long: no answer
MAX_CALLS = 500  # dialogs at once: a bound on what strangers can make us hold
TCP_IDLE_S = 300.0  # a stream with no message for this long (and no call) is closed
CONNECT_S = 5.0  # opening a TCP or TLS connection to a unit: given up after this long
USER_AGENT = "multipoint"


class Flow:
    """Where a message came from, and how to send back: a UDP address or a TCP stream."""

    transport = "udp"

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address

    def send(self, data: bytes) -> None:
        raise NotImplementedError

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"

    @property
    def closed(self) -> bool:
        """Whether nothing can be sent this way any more (a stream that has closed)."""
        return False


class _UdpFlow(Flow):
    def __init__(self, endpoint: _UdpEndpoint, address: tuple[str, int]) -> None:
        super().__init__(address)
        self.endpoint = endpoint

    def send(self, data: bytes) -> None:
        if self.endpoint.transport is not None:
            self.endpoint.transport.sendto(data, self.address)


class _TcpFlow(Flow):
    transport = "tcp"

    def __init__(self, writer: asyncio.StreamWriter, address: tuple[str, int], tls: bool = False) -> None:
        super().__init__(address)
        self.writer = writer
        # Once the unit closed it: our connection back to it that carries the responses
        # to the requests that came this way (SipAgent._send_back).
        self.reopened: asyncio.Task[_TcpFlow] | None = None
        if tls:
            self.transport = "tls"

    def send(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)

    @property
    def closed(self) -> bool:
        return self.writer.is_closing()


@dataclass
class Dialled:
    """How a call we made went: the final status (0: no response at all)."""

    status: int
    reason: str
    call: Call | None = None
    answer: str = ""


@dataclass(eq=False)
class Call:
    """One dialog with a unit, from its INVITE on."""

    invite: SipMessage
    flow: Flow
    local_tag: str
    call_id: str
    remote_uri: str  # where in-dialog requests go (its Contact)
    remote_party: str  # its side's header (its From, or the To of its 200), its tag in it
    local_party: str  # ours (our To with our tag, or our From), for our BYE
    # The proxies on the dialog's path (RFC 3261 12.1): the Route of our requests in it.
    # Its INVITE's Record-Route in order when it called; its 200's reversed when we did.
    route_set: list[str] = field(default_factory=list)
    answer: SipMessage | None = None  # the final response to the INVITE
    ack: SipMessage | None = None  # ours, when we called (sent again if the 200 comes again)
    local_sdp: bytes = b""  # ours as the unit has it: our answer, or our offer when we called
    remote_sdp: bytes = b""  # the unit's: its offer, or its answer when we called
    confirmed: bool = False  # the ACK came
    ended: bool = False
    local_cseq: int = 0
    retransmit: asyncio.Task[None] | None = None  # our 2xx to an INVITE, until its ACK
    ack_cseq: int = 0  # the CSeq of the INVITE that 2xx answers (its ACK carries the same)
    app: Any = None  # the application's object for this call
    updating: bool = False  # a re-INVITE's new offer is with the application
    reinvite: tuple[SipMessage, Flow] | None = None  # that re-INVITE, and where it came from
    reinvite_cancelled: bool = False  # it was CANCELled: answered 487, its offer not taken
    answer_in_ack: bool = False  # our 200 to an INVITE without an offer had ours: its ACK answers

    @property
    def offer(self) -> str:
        return self.invite.body.decode("utf-8", "replace")


class Calls(Protocol):
    """The application side: what to do with a new call, and hearing that one ended."""

    async def invited(self, call: Call) -> tuple[int, str, str]:
        """(status, reason, SDP answer) for a new INVITE; a status ≥ 300 refuses it."""
        ...

    async def ended(self, call: Call, by_unit: bool) -> None:
        ...

    async def reinvited(self, call: Call, offer: str, undo: bool = False,
                        answered: bool = False) -> tuple[int, str, str]:
        """(status, reason, SDP answer) for a re-INVITE's new offer; a status ≥ 300
        refuses it, and the session stays as it was. ``undo``: the unit cancelled a
        re-INVITE whose offer was taken (its answer unsent): go back to ``offer``, the
        one it had before, and to our SDP as it has it (``call.local_sdp``). An empty
        ``offer``: a re-INVITE without one, so the SDP returned is our offer (every
        stream sendrecv again). ``answered``: ``offer`` is the unit's answer to that, in
        its ACK; our SDP stays as it has it."""
        ...

    def key_pressed_in_info(self, call: Call, key: str) -> None:
        """A key the unit sent in a SIP INFO of the call's dialog."""
        ...


class _UdpEndpoint(asyncio.DatagramProtocol):
    def __init__(self, agent: SipAgent) -> None:
        self.agent = agent
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if data in (b"\r\n", b"\r\n\r\n"):  # keep-alive (RFC 5626 4.4.1)
            return
        self.agent.received(data, _UdpFlow(self, (addr[0], addr[1])))

    def error_received(self, exc: Exception) -> None:
        pass  # an ICMP error for something we sent: that unit is gone


async def _send_again_for_64_t1(send: Callable[[], None]) -> None:
    """``send`` again at T1, doubling up to T2, until 64*T1 has passed (RFC 3261:
    a 2xx to an INVITE until its ACK, 13.3.1.4; a refusal until its ACK, timer H); the
    caller cancels it when the ACK comes. T1 and T2 are read now, not at import
    (TRANSACTION_S is): a test shortens them."""
    loop = asyncio.get_running_loop()
    give_up_at, interval = loop.time() + 64 * T1_S, T1_S
    while (left := give_up_at - loop.time()) > 0:
        await asyncio.sleep(min(interval, left))
        if loop.time() < give_up_at:
            send()
        interval = min(interval * 2, T2_S)


class SipAgent:
    """Listens for SIP and keeps the dialogs (see the module's text)."""

    def __init__(self, calls: Calls, host: str, advertised_host: str | None = None) -> None:
        self.calls = calls
        self.host = host
        self.advertised_host = advertised_host or host
        self.udp: _UdpEndpoint | None = None
        self.tcp: asyncio.Server | None = None
        self.tls: asyncio.Server | None = None
        self.udp_port = 0
        self.tcp_port = 0
        self.tls_port = 0
        self._client_tls: ssl.SSLContext | None = None  # dialling a unit over TLS
        self.dialogs: dict[tuple[str, str], Call] = {}  # (Call-ID, our tag)
        self._invites: dict[tuple[str, str], Call] = {}  # (Call-ID, branch): pending INVITEs
        self._responses: dict[tuple[str, str, str], tuple[float, bytes]] = {}  # retransmissions
        self._refusals: dict[tuple[str, str], asyncio.Task[None]] = {}  # (Call-ID, branch): until ACKed
        self._bye_waiters: dict[str, asyncio.Future[int]] = {}  # our BYE's branch -> its status
        self._dialling: dict[str, asyncio.Queue[SipMessage]] = {}  # our INVITE's branch -> responses
        self._refused: dict[str, tuple[Flow, bytes]] = {}  # our refused INVITE's branch -> our ACK
        self._calling: set[tuple[str, str]] = set()  # (Call-ID, our tag) of our INVITEs not answered yet
        self._streams: set[asyncio.Task[None]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.counters = {"messages": 0, "malformed": 0, "refused": 0, "calls": 0}

    async def start(self, udp_port: int, tcp_port: int | None) -> None:
        loop = asyncio.get_running_loop()
        transport, endpoint = await loop.create_datagram_endpoint(
            lambda: _UdpEndpoint(self), local_addr=(self.host, udp_port))
        self.udp = endpoint
        self.udp_port = transport.get_extra_info("sockname")[1]
        if tcp_port is not None:
            try:
                self.tcp = await asyncio.start_server(self._stream, self.host, tcp_port or self.udp_port)
            except OSError:
                transport.close()
                raise
            self.tcp_port = self.tcp.sockets[0].getsockname()[1]

    async def start_tls(self, port: int, certificate: str, key: str, cafile: str | None = None) -> None:
        """SIP over TLS (RFC 3261 26.2) on ``port``, with this certificate and key; units
        we call over TLS are verified against ``cafile`` (else the system's CAs)."""
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server.minimum_version = ssl.TLSVersion.TLSv1_2
        server.load_cert_chain(certificate, key)
        self.tls = await asyncio.start_server(self._tls_stream, self.host, port, ssl=server)
        self.tls_port = self.tls.sockets[0].getsockname()[1]
        self._client_tls = ssl.create_default_context(cafile=cafile)

    def port_for(self, transport: str) -> int:
        return {"udp": self.udp_port, "tcp": self.tcp_port, "tls": self.tls_port}[transport]

    async def close(self) -> None:
        # Every call ends with a BYE (a unit would otherwise sit in a dead call until its
        # own media timeout), sent before the sockets close and waited for a moment: long
        # enough for a unit on a working network to confirm it, and for one resend.
        calls = list(self.dialogs.values())
        if calls:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(self.hang_up(call) for call in calls),
                                                      return_exceptions=True), CLOSE_BYE_S)
        if self.udp is not None and self.udp.transport is not None:
            self.udp.transport.close()
        for server in (self.tcp, self.tls):
            if server is not None:
                server.close()
        for task in [*self._streams, *self._tasks]:
            task.cancel()

    def _spawn(self, coroutine: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        await self._read_stream(reader, _TcpFlow(writer, (peer[0], peer[1])))

    async def _tls_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        await self._read_stream(reader, _TcpFlow(writer, (peer[0], peer[1]), tls=True))

    async def _read_stream(self, reader: asyncio.StreamReader, flow: _TcpFlow) -> None:
        """Messages from one TCP stream (a unit's, or ours to a unit we called)."""
        task = asyncio.current_task()
        assert task is not None
        self._streams.add(task)
        writer = flow.writer
        buffer = bytearray()
        try:
            while True:
                try:
                    chunk = await asyncio.wait_for(reader.read(16384), TCP_IDLE_S)
                except TimeoutError:
                    if any(c.flow is flow for c in self.dialogs.values()):
                        continue
                    break
                if not chunk:
                    break
                buffer += chunk
                while True:
                    while buffer[:4] == b"\r\n\r\n":
                        # A keep-alive ping between messages: the pong, one CRLF, at
                        # once (RFC 5626 3.5.1), else the unit takes the connection for
                        # dead (4.4.1).
                        del buffer[:4]
                        flow.send(b"\r\n")
                    try:
                        data = frame(buffer)
                    except SipParseError as exc:  # a stream we cannot frame cannot go on
                        self.counters["malformed"] += 1
                        logger.info("SIP over TCP from %s: %s; closing", flow.address, exc)
                        # The unit is told why first (it saw the connection close alone).
                        self._bad_request(bytes(buffer), flow, str(exc))
                        return
                    if data is None:
                        break
                    self.received(data, flow)
                if len(buffer) > MAX_MESSAGE_BYTES:
                    return
        except (ConnectionError, OSError):
            pass
        finally:
            self._streams.discard(task)
            writer.close()

    # Receiving --------------------------------------------------------------------------

    def received(self, data: bytes, flow: Flow) -> None:
        self.counters["messages"] += 1
        try:
            message = parse(data)
        except SipParseError as exc:
            self.counters["malformed"] += 1
            self._bad_request(data, flow, str(exc))
            return
        try:
            if message.is_request:
                self._request(message, flow)
            else:
                self._response(message)
        except SipParseError as exc:
            self.counters["malformed"] += 1
            if message.is_request and message.method != "ACK":
                self._send(flow, response_to(message, 400, _reason(str(exc))))
        except Exception:
            logger.exception("SIP message from %s failed", flow.address)
            if message.is_request and message.method != "ACK":
                self._send(flow, response_to(message, 500))

    def _bad_request(self, data: bytes, flow: Flow, why: str) -> None:
        """Answer 400 when enough of the request is readable to address a response."""
        head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
        lines = head.split("\r\n")
        if not lines or lines[0].startswith("SIP/") or lines[0].split(" ")[0] == "ACK":
            return
        wanted = {"via": "Via", "v": "Via", "from": "From", "f": "From", "to": "To", "t": "To",
                  "call-id": "Call-ID", "i": "Call-ID", "cseq": "CSeq"}
        response = SipMessage(status=400, reason=_reason(why))
        for line in lines[1:]:
            name, _, value = line.partition(":")
            canonical = wanted.get(name.strip().lower())
            if canonical is not None:
                response.add(canonical, value.strip())
        if all(response.get(h) for h in ("Via", "From", "To", "Call-ID", "CSeq")):
            self._send(flow, response)

    def _request(self, request: SipMessage, flow: Flow) -> None:
        method = request.method
        branch = transaction_branch(request)
        key = (request.call_id, branch, method)
        cached = self._responses.get(key)
        if cached is not None and method != "ACK":  # a retransmission: the same answer
            self._send_back(flow, request.get_all("Via")[0], cached[1])
            return
        if method == "INVITE":
            self._invite(request, flow, branch)
        elif method == "ACK":
            # The ACK of a refusal is part of the INVITE's transaction: its branch.
            refusal = self._refusals.pop((request.call_id, branch), None)
            if refusal is not None:
                refusal.cancel()
                return
            call = self._dialog(request)
            # The ACK of our 2xx carries its INVITE's CSeq: a late copy of an earlier ACK,
            # or the ACK of a refused INVITE (which a unit sends whether or not it had
            # our 2xx), does not stop it.
            if call is not None and request.cseq[0] == call.ack_cseq:
                call.confirmed = True
                if call.retransmit is not None:
                    call.retransmit.cancel()
                    call.retransmit = None
                if call.answer_in_ack:
                    call.answer_in_ack = False
                    if request.body:  # (none: the session stays as our offer made it)
                        call.updating = True  # another re-INVITE waits for it
                        self._spawn(self._answered_in_ack(call, request.body))
        elif method == "BYE":
            call = self._dialog(request)
            if call is None:
                self._reply(request, flow, 481, branch)
                return
            self._reply(request, flow, 200, branch)
            self._end(call, by_unit=True)
        elif method == "CANCEL":
            pending = self._invites.get((request.call_id, branch))
            if pending is None:
                self._reply(request, flow, 481, branch)
                return
            self._reply(request, flow, 200, branch)
            if pending.answer is None:
                # Answered 487 now; a join under way finishes and is undone (_decide).
                self._final(pending, 487, "Request Terminated", b"")
                self._end(pending, by_unit=True)
            elif pending.reinvite is not None and not pending.reinvite_cancelled \
                    and transaction_branch(pending.reinvite[0]) == branch:
                # A re-INVITE whose new offer is still with the application (its worker):
                # answered 487 now, and the call goes on with the session as it was
                # (RFC 3261 9.2); what the worker makes of the offer meanwhile is undone
                # (_update).
                reinvite, reinvite_flow = pending.reinvite
                pending.reinvite_cancelled = True
                self._cache_and_send(reinvite, reinvite_flow, branch,
                                     response_to(reinvite, 487, to_tag=pending.local_tag))
        elif method == "INFO":
            self._info(request, flow, branch)
        elif method == "OPTIONS":
            response = response_to(request, 200, to_tag=new_tag())
            response.add("Allow", ALLOW)
            response.add("Accept", ACCEPTED_BODIES)
            self._cache_and_send(request, flow, branch, response)
        else:
            response = response_to(request, 405 if method in ("REGISTER", "SUBSCRIBE", "NOTIFY",
                                                             "PUBLISH", "MESSAGE", "REFER",
                                                             "UPDATE", "PRACK") else 501,
                                   to_tag=new_tag())
            response.add("Allow", ALLOW)
            self._cache_and_send(request, flow, branch, response)

    def _info(self, request: SipMessage, flow: Flow, branch: str) -> None:
        """A key in an INFO of a call (legacy INFO, RFC 2976 usage: no Info-Package)."""
        call = self._dialog(request)
        if call is None or call.ended:
            self._reply(request, flow, 481, branch)
            return
        kind = request.get("Content-Type").split(";")[0].strip().lower()
        if not request.body:  # an empty INFO: a keep-alive some units send
            self._reply(request, flow, 200, branch)
            return
        if kind not in DTMF_INFO_TYPES:
            response = response_to(request, 415, to_tag=call.local_tag)
            response.add("Accept", ", ".join(DTMF_INFO_TYPES))
            self._cache_and_send(request, flow, branch, response)
            return
        key = dtmf_key(kind, request.body.decode("utf-8", "replace"))
        if key is None:
            self._reply(request, flow, 400, branch)
            return
        self._reply(request, flow, 200, branch)
        self.calls.key_pressed_in_info(call, key)

    def _dialog(self, request: SipMessage) -> Call | None:
        return self.dialogs.get((request.call_id, tag_of(request.get("To"))))

    def _invite(self, request: SipMessage, flow: Flow, branch: str) -> None:
        pending = self._invites.get((request.call_id, branch))
        if pending is not None:  # retransmitted while we decide: still trying
            self._send(flow, response_to(request, 100))
            return
        offer = session_description(request)
        if offer is None:  # (a re-INVITE's call goes on as it was)
            response = response_to(request, 415, to_tag=tag_of(request.get("To")) or new_tag())
            response.add("Accept", ACCEPTED_BODIES)
            self._cache_and_send(request, flow, branch, response)
            return
        request.body = offer  # from here on, the INVITE's body is its SDP alone
        existing = self._dialog(request)
        if existing is not None:  # a re-INVITE: the session stays as it was answered
            if existing.ended:
                self._reply(request, flow, 481, branch)
                return
            if existing.updating:
                # Another INVITE before our final answer to the one before, a new offer
                # or a refresh alike: 500 with a Retry-After of 0 to 10 s, at random
                # (RFC 3261 14.2; 491 is for glare with an INVITE of ours).
                self._reply(request, flow, 500, branch, retry_after=random.randint(0, 10))
                return
            if not request.body or not same_session(request.body, existing.remote_sdp):
                # A new offer (hold, another address): the application's to answer. None
                # (RFC 3261 14.2): the application makes ours, every stream sendrecv again,
                # and the unit answers in its ACK; a unit on hold takes the call back so
                # (RFC 6337 5.3), as units behind a call manager do, and our SDP as it was
                # (recvonly then) kept it on hold.
                existing.updating = True
                existing.reinvite, existing.reinvite_cancelled = (request, flow), False
                self._invites[(request.call_id, branch)] = existing
                self._send(flow, response_to(request, 100))
                self._spawn(self._update(existing, request, flow, branch))
                return
            # A session refresh (the same offer): our answer again.
            response = response_to(request, 200, to_tag=existing.local_tag)
            self._add_contact(response, flow)
            response.add("Content-Type", "application/sdp")
            response.body = existing.local_sdp
            data = self._cache_and_send(request, flow, branch, response)
            self._retransmit_until_acked(existing, flow, request, data)
            return
        to_tag = tag_of(request.get("To"))
        if to_tag and (request.call_id, to_tag) in self._calling:
            # The unit we call sends an INVITE of its own in the early dialog while ours
            # is not answered: glare, answered as RFC 3261 14.2 says (it tries again
            # later), and our INVITE goes on.
            self._reply(request, flow, 491, branch)
            return
        if to_tag:  # in a dialog we do not know (we restarted, say)
            self._reply(request, flow, 481, branch)
            return
        if len(self.dialogs) >= MAX_CALLS:
            self.counters["refused"] += 1
            self._reply(request, flow, 503, branch, retry_after=60)
            return
        if request.get("Require"):
            response = response_to(request, 420, to_tag=new_tag())
            response.add("Unsupported", request.get("Require"))
            self._cache_and_send(request, flow, branch, response)
            return
        if not request.body:
            # Units offer in the INVITE; an offer in the ACK (late offer) is not taken.
            response = response_to(request, 488, "Not Acceptable Here: an SDP offer is required",
                                   to_tag=new_tag())
            response.add("Warning", '399 multipoint "this service needs the SDP offer in the INVITE"')
            self._cache_and_send(request, flow, branch, response)
            return
        contact = request.get("Contact")
        local_tag = new_tag()
        call = Call(invite=request, flow=flow, local_tag=local_tag, call_id=request.call_id,
                    remote_uri=uri_of(contact) if contact else uri_of(request.get("From")),
                    remote_party=request.get("From"), local_party=request.get("To") + f";tag={local_tag}",
                    route_set=request.get_all("Record-Route"))
        self._invites[(request.call_id, branch)] = call
        self.dialogs[(call.call_id, local_tag)] = call
        self.counters["calls"] += 1
        self._send(flow, response_to(request, 100))
        self._spawn(self._decide(call, branch))

    async def _decide(self, call: Call, branch: str) -> None:
        try:
            status, reason, sdp = await self.calls.invited(call)
        except asyncio.CancelledError:
            return
        except Exception:
            logger.exception("SIP call %s: could not be handled", call.call_id)
            status, reason, sdp = 500, "Server Internal Error", ""
        if call.answer is not None:  # cancelled (or hung up) meanwhile: undo what was set up
            # Its transaction goes as an answered one's does (it answers a retransmission
            # with the 487 until then); kept, every INVITE cancelled in time stayed for ever.
            self._spawn(self._forget_invite_later(call, branch))
            if status < 300:
                await self.calls.ended(call, True)
            return
        self._final(call, status, reason, sdp.encode())
        if status >= 300:
            self._forget(call)
        self._spawn(self._forget_invite_later(call, branch))

    async def _update(self, call: Call, request: SipMessage, flow: Flow, branch: str) -> None:
        """A re-INVITE's new offer, answered as the application says; on a refusal the
        call goes on as it was (RFC 3261 14.1), and so it does when the unit cancelled
        the re-INVITE before the answer (9.2: the CANCEL answered it 487)."""
        offer = request.body.decode("utf-8", "replace")
        try:
            try:
                status, reason, sdp = await self.calls.reinvited(call, offer)
            except Exception:
                logger.exception("SIP call %s: a re-INVITE could not be handled", call.call_id)
                status, reason, sdp = 500, "Server Internal Error", ""
            if call.reinvite_cancelled:
                # Answered 487 meanwhile (RFC 3261 9.2): the session stays as it was, and
                # what the application made of the offer is undone before another is taken.
                if status < 300 and not call.ended:
                    await self._undo_update(call)
                self._spawn(self._forget_invite_later(call, branch))
                return
        except asyncio.CancelledError:
            return
        finally:
            call.updating, call.reinvite = False, None
        if call.ended:
            status, reason, sdp = 481, "Call/Transaction Does Not Exist", ""
        response = response_to(request, status, reason, to_tag=call.local_tag)
        if status < 300:
            self._add_contact(response, flow)
            response.add("Allow", ALLOW)
            response.add("Content-Type", "application/sdp")
            response.body = sdp.encode()
            call.local_sdp = response.body
            if request.body:
                call.remote_sdp = request.body
            else:  # our offer: the unit's answer comes in the ACK
                call.answer_in_ack = True
        elif status == 488:
            response.add("Warning", f'399 {self.advertised_host} "{_quoted(reason)}"')
        data = self._cache_and_send(request, flow, branch, response)
        if status < 300:
            self._retransmit_until_acked(call, flow, request, data)
        self._spawn(self._forget_invite_later(call, branch))

    async def _answered_in_ack(self, call: Call, answer: bytes) -> None:
        """The unit's answer, in its ACK, to our offer in the 200 to its re-INVITE
        without one: the application takes it as the session from now on."""
        try:
            status, reason, _ = await self.calls.reinvited(
                call, answer.decode("utf-8", "replace"), answered=True)
        except Exception:
            logger.exception("SIP call %s: the answer in an ACK could not be taken", call.call_id)
            return
        finally:
            call.updating = False
        if status < 300:
            call.remote_sdp = answer
        else:
            logger.warning("SIP call %s: the answer in its ACK could not be taken: %s %s",
                           call.call_id, status, reason)

    async def _undo_update(self, call: Call) -> None:
        """The application took the new offer of a re-INVITE the unit then cancelled (we
        answered 487): the session goes back to the unit's offer before it, which is
        what the unit has. Only then is another re-INVITE taken (``updating``)."""
        try:
            status, reason, _ = await self.calls.reinvited(
                call, call.remote_sdp.decode("utf-8", "replace"), undo=True)
        except Exception:
            logger.exception("SIP call %s: a cancelled re-INVITE could not be undone", call.call_id)
            return
        if status >= 300:
            logger.warning("SIP call %s: a cancelled re-INVITE could not be undone: %s %s",
                           call.call_id, status, reason)

    def _final(self, call: Call, status: int, reason: str, body: bytes) -> None:
        response = response_to(call.invite, status, reason, to_tag=call.local_tag)
        if status < 300:
            # It sets the dialog up: the unit's route set is what it carries (12.1.1).
            for route in call.route_set:
                response.add("Record-Route", route)
            self._add_contact(response, call.flow)
            response.add("Allow", ALLOW)
            response.add("Content-Type", "application/sdp")
            response.body = body
            call.local_sdp, call.remote_sdp = body, call.invite.body
        elif status == 486 or status == 503:
            response.add("Retry-After", "60")
        call.answer = response
        data = response.to_bytes()
        via = call.invite.get_all("Via")[0]
        branch = transaction_branch(call.invite)
        self._responses[(call.call_id, branch, "INVITE")] = (time.monotonic(), data)
        self._send_back(call.flow, via, data)
        if status < 300:
            self._retransmit_until_acked(call, call.flow, call.invite, data)
        else:
            self._retransmit_refusal(call.call_id, branch, call.flow, via, data)

    def _retransmit_until_acked(self, call: Call, flow: Flow, invite: SipMessage, data: bytes) -> None:
        """Send our 2xx to ``invite`` again until its ACK comes (RFC 3261
        13.3.1.4). On every transport, TCP and TLS too: the 2xx and its ACK go end to end,
        and a proxy on the way may forward them over UDP; and a unit that never ACKs is
        not left in the room until its media times out."""
        if call.retransmit is not None:
            # A newer INVITE answered: the unit's transaction of the one before is over,
            # so it had that 2xx.
            call.retransmit.cancel()
        call.ack_cseq = invite.cseq[0]
        call.retransmit = self._spawn(self._retransmit_ok(call, flow, invite.get_all("Via")[0], data))

    async def _retransmit_ok(self, call: Call, flow: Flow, via: str, data: bytes) -> None:
        await _send_again_for_64_t1(lambda: self._send_back(flow, via, data))
        # No ACK in 64*T1: the unit never took the answer. The dialog is confirmed and
        # ended at once with a BYE (13.3.1.4, 14.2), as any hang-up of ours: it leaves
        # the room and its record is closed (Calls.ended).
        logger.info("SIP call %s: no ACK for our 200 in %.0f s; hanging up", call.call_id, 64 * T1_S)
        call.retransmit = None  # (hang_up would cancel this very task)
        call.confirmed = True
        await self.hang_up(call, wait=False)

    def _retransmit_refusal(self, call_id: str, branch: str, flow: Flow, via: str, data: bytes) -> None:
        """Send our final non-2xx answer to an INVITE again over UDP until its ACK comes
        (RFC 3261 17.2.1: T1 doubling to T2, for 64*T1 at most, timer H): the unit stops
        resending its INVITE once it had our 100, so a refusal lost on the way left it
        waiting for its own timeout. A stream is reliable: nothing again. Bounded in time
        (about 11 datagrams an INVITE, as the RFC's) and in number, so INVITEs from a
        forged source make us send no more toward it than the RFC allows."""
        if flow.reliable or len(self._refusals) >= 10 * MAX_CALLS:
            return
        key = (call_id, branch)
        if key in self._refusals:
            return
        self._refusals[key] = self._spawn(self._retransmit_refusal_until(key, flow, via, data))

    async def _retransmit_refusal_until(self, key: tuple[str, str], flow: Flow, via: str,
                                        data: bytes) -> None:
        try:
            await _send_again_for_64_t1(lambda: self._send_back(flow, via, data))
        finally:
            if self._refusals.get(key) is asyncio.current_task():
                del self._refusals[key]

    async def _forget_invite_later(self, call: Call, branch: str) -> None:
        await asyncio.sleep(TRANSACTION_S)
        self._invites.pop((call.call_id, branch), None)
        now = time.monotonic()
        for key in [k for k, (at, _) in self._responses.items() if now - at > TRANSACTION_S]:
            del self._responses[key]

    def _reply(self, request: SipMessage, flow: Flow, status: int, branch: str,
               retry_after: int | None = None) -> None:
        response = response_to(request, status, to_tag=tag_of(request.get("To")) or new_tag())
        if retry_after is not None:
            response.add("Retry-After", str(retry_after))
        self._cache_and_send(request, flow, branch, response)

    def _cache_and_send(self, request: SipMessage, flow: Flow, branch: str, response: SipMessage) -> bytes:
        data = response.to_bytes()
        self._responses[(request.call_id, branch, request.method)] = (time.monotonic(), data)
        if len(self._responses) > 10 * MAX_CALLS:  # a flood of one-off requests
            oldest = sorted(self._responses.items(), key=lambda item: item[1][0])[:MAX_CALLS]
            for key, _ in oldest:
                del self._responses[key]
        via = request.get_all("Via")[0]
        self._send_back(flow, via, data)
        if request.method == "INVITE" and response.status >= 300:
            self._retransmit_refusal(request.call_id, branch, flow, via, data)
        return data

    def _send(self, flow: Flow, response: SipMessage) -> None:
        # (A 400 to a request whose Via names no hop has none: it goes back the flow.)
        self._send_back(flow, next(iter(response.get_all("Via")), ""), response.to_bytes())

    def _send_back(self, flow: Flow, via: str, data: bytes) -> None:
        """A response to a request that came over ``flow`` with ``via`` its top Via: back
        over that flow while it is open. Over TCP or TLS the unit may have closed it since
        (a unit that opens a connection per transaction, one that closes it once its
        request is sent, a NAT that dropped an idle one): then the response goes over a
        new connection (RFC 3261 18.2.2) to the port of the Via's sent-by (the
        transport's default when it names none) at the address the request came from,
        the Via's ``received``, not at the host its sent-by names, for the reason our
        BYE does not go to the host a Contact names (:meth:`_flow_for`). That connection
        is opened once for the closed flow and carries its later responses too (our
        2xx again until its ACK, an answer to a retransmitted request); before, they
        were written to the closed stream, that is nowhere, and a unit that closes its
        connection after its INVITE never had our 200."""
        if not flow.closed:
            flow.send(data)
        elif isinstance(flow, _TcpFlow):
            self._spawn(self._send_over_reopened(flow, via, data))

    async def _send_over_reopened(self, flow: _TcpFlow, via: str, data: bytes) -> None:
        opening = flow.reopened
        if opening is None or (opening.done() and (
                opening.cancelled() or opening.exception() is not None or opening.result().closed)):
            opening = flow.reopened = self._spawn(self._reopen(flow, via))
        try:
            reopened = await asyncio.shield(opening)
        except (SipParseError, OSError, ValueError, TimeoutError, ssl.SSLError) as exc:
            logger.info("SIP over %s from %s: its connection has closed and none could be opened "
                        "back for our response (%s): it is not sent", flow.transport.upper(),
                        flow.address[0], exc)
            return
        reopened.send(data)

    async def _reopen(self, flow: _TcpFlow, via: str) -> _TcpFlow:
        """A new connection to the unit a closed ``flow`` was with, on its transport, at
        the port of the request's ``via`` sent-by (RFC 3261 18.2.2)."""
        host, port_text = _sent_by(via, flow.transport)
        if not 0 < int(port_text) < 65536:
            raise ValueError(f"no port {port_text}")
        return await self._connect(flow.transport, host, (flow.address[0], int(port_text)))

    def _add_contact(self, response: SipMessage, flow: Flow) -> None:
        port = self.port_for(flow.transport)
        response.add("Contact", f"<sip:multipoint@{self.advertised_host}:{port};transport={flow.transport}>")
        response.add("Server", USER_AGENT)

    def _response(self, response: SipMessage) -> None:
        branch = params(response.get_all("Via")[0]).get("branch", "")
        responses = self._dialling.get(branch)
        if responses is not None:
            responses.put_nowait(response)
            return
        refused = self._refused.get(branch)
        if refused is not None and response.status >= 300 and response.cseq[1] == "INVITE":
            # The unit's refusal of our INVITE again: our ACK was lost, so it goes again.
            refused[0].send(refused[1])
            return
        if 200 <= response.status < 300 and response.cseq[1] == "INVITE":
            # Our 200's ACK was lost and the unit sends the 200 again: so is the ACK, over
            # a new connection when the unit closed ours (as our BYE, _flow_for).
            call = self.dialogs.get((response.call_id, tag_of(response.get("From"))))
            if call is not None and call.ack is not None:
                self._spawn(self._send_in_dialog(call, call.ack))
            return
        waiter = self._bye_waiters.get(branch)
        if waiter is not None and not waiter.done() and response.status >= 200:
            waiter.set_result(response.status)

    # Calling a unit -------------------------------------------------------------------------

    async def dial(self, target: str, offer: str, caller: str = "multipoint",
                   ring_s: float = RING_S) -> Dialled:
        """Call ``target`` (``sip:unit@host[:port][;transport=tcp]``) with ``offer``.

        Returns the final status and, on 2xx, the call (a dialog like an incoming one:
        its BYE reaches :meth:`Calls.ended`) and the unit's SDP answer. Status 0: nothing
        came back (unreachable); 408: it rang for ``ring_s`` and nobody answered (the
        INVITE is cancelled).
        """
        if not dialable(target):
            return Dialled(400, "not a SIP address (sip:unit@address)")
        named = re.search(r";transport=(udp|tcp|tls)\b", target, re.IGNORECASE)
        transport = "tls" if target.lower().startswith("sips:") \
            else named.group(1).lower() if named else "udp"
        host, port_text = _host_and_port(target, transport)
        if transport == "tls" and self._client_tls is None:
            return Dialled(0, "SIP over TLS is not configured here")
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host.strip("[]"), int(port_text), type=socket.SOCK_DGRAM)
            address = (str(infos[0][4][0]), int(infos[0][4][1]))
        except (OSError, ValueError, IndexError):
            return Dialled(0, f"cannot resolve {host}")
        flow: Flow
        if transport in ("tcp", "tls"):
            try:
                flow = await self._connect(transport, host, address)
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                return Dialled(0, f"cannot connect to {address[0]}:{address[1]} over "
                                  f"{transport.upper()} ({exc})")
        else:
            assert self.udp is not None
            flow = _UdpFlow(self.udp, address)
        local_tag, call_id, branch = new_tag(), f"{new_tag()}@{self.advertised_host}", new_branch()
        port = self.port_for(transport)
        name = "".join(ch for ch in caller if ch.isprintable()).replace('"', "'")
        via = f"SIP/2.0/{transport.upper()} {self.advertised_host}:{port}"
        invite = SipMessage(method="INVITE", uri=target)
        invite.add("Via", f"{via};branch={branch};rport")
        invite.add("Max-Forwards", "70")
        invite.add("From", f'"{name}" <sip:multipoint@{self.advertised_host}>;tag={local_tag}')
        invite.add("To", f"<{target}>")
        invite.add("Call-ID", call_id)
        invite.add("CSeq", "1 INVITE")
        self._add_contact(invite, flow)
        invite.add("Allow", ALLOW)
        invite.add("Content-Type", "application/sdp")
        invite.body = offer.encode()
        responses: asyncio.Queue[SipMessage] = asyncio.Queue()
        self._dialling[branch] = responses
        self._calling.add((call_id, local_tag))  # until the dialog is set up below
        try:
            final = await self._ring(flow, invite, responses, ring_s)
        finally:
            self._dialling.pop(branch, None)
            self._calling.discard((call_id, local_tag))
        if final is None:
            return Dialled(0, "no response")
        if final.status == 408 and final.reason == "no answer":
            return Dialled(408, "no answer")
        if final.status >= 300:
            return Dialled(final.status, final.reason)
        contact = final.get("Contact")
        remote_to = final.get("To")
        call = Call(invite=invite, flow=flow, local_tag=local_tag, call_id=call_id,
                    remote_uri=uri_of(contact) if contact else target, remote_party=remote_to,
                    local_party=invite.get("From"), answer=final, confirmed=True, local_cseq=1,
                    route_set=final.get_all("Record-Route")[::-1])
        call.local_sdp, call.remote_sdp = invite.body, final.body
        ack = SipMessage(method="ACK", uri=call.remote_uri)
        ack.add("Via", f"{via};branch={new_branch()};rport")
        ack.add("Max-Forwards", "70")
        for name_, value in (("From", call.local_party), ("To", remote_to), ("Call-ID", call_id),
                             ("CSeq", "1 ACK")):
            ack.add(name_, value)
        for route in call.route_set:
            ack.add("Route", route)
        call.ack = ack
        flow.send(ack.to_bytes())
        self.dialogs[(call_id, local_tag)] = call
        self.counters["calls"] += 1
        return Dialled(final.status, final.reason, call, final.body.decode("utf-8", "replace"))

    async def _connect(self, transport: str, host: str, address: tuple[str, int]) -> _TcpFlow:
        """A TCP or TLS connection of ours to a unit at ``address`` (``host`` as its URI
        names it: a TLS certificate is checked against it), read as any stream is. Raises
        OSError, TimeoutError or ssl.SSLError when it cannot be opened."""
        tls = self._client_tls if transport == "tls" else None
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            *address, ssl=tls, server_hostname=host.strip("[]") if tls else None), CONNECT_S)
        flow = _TcpFlow(writer, address, tls=tls is not None)
        self._spawn(self._read_stream(reader, flow))
        return flow

    async def _ring(self, flow: Flow, invite: SipMessage, responses: asyncio.Queue[SipMessage],
                    ring_s: float) -> SipMessage | None:
        """Send the INVITE (again over UDP until something comes back), wait for its final
        answer; past ``ring_s``, CANCEL it. A non-2xx final gets its ACK here."""
        data = invite.to_bytes()
        flow.send(data)
        loop = asyncio.get_running_loop()
        start, interval, resend_at = loop.time(), T1_S, loop.time() + T1_S
        heard = False
        cancelled = False
        while True:
            now = loop.time()
            if not heard and now - start > TRANSACTION_S:
                return None
            if now - start > ring_s and not cancelled and heard:
                cancelled = True
                flow.send(self._cancel_of(invite).to_bytes())
            if cancelled and now - start > ring_s + TRANSACTION_S:
                return None
            wait = min(resend_at - now, 0.5) if not heard and not flow.reliable else 0.5
            try:
                response = await asyncio.wait_for(responses.get(), max(wait, 0.01))
            except TimeoutError:
                if not heard and not flow.reliable and loop.time() >= resend_at:
                    flow.send(data)
                    interval = min(interval * 2, T2_S)
                    resend_at = loop.time() + interval
                continue
            if response.cseq[1] != "INVITE":
                continue  # the 200 to our CANCEL
            heard = True
            if response.status < 200:
                continue
            if response.status >= 300:
                ack = SipMessage(method="ACK", uri=invite.uri)
                ack.add("Via", invite.get_all("Via")[0])
                for header in ("From", "Call-ID"):
                    ack.add(header, invite.get(header))
                ack.add("To", response.get("To"))
                ack.add("CSeq", "1 ACK")
                data = ack.to_bytes()
                flow.send(data)
                if not flow.reliable:
                    # The unit sends its refusal again until our ACK reaches it: each copy
                    # gets the ACK again, for timer D (RFC 3261 17.1.1.2). Else one lost
                    # ACK had it resend the refusal for 32 s.
                    branch = params(invite.get_all("Via")[0]).get("branch", "")
                    self._refused[branch] = (flow, data)
                    self._spawn(self._forget_refused_later(branch))
                if cancelled and response.status == 487:
                    return SipMessage(status=408, reason="no answer")
            return response

    async def _forget_refused_later(self, branch: str) -> None:
        await asyncio.sleep(TIMER_D_S)  # (read now: a test shortens it)
        self._refused.pop(branch, None)

    def _cancel_of(self, invite: SipMessage) -> SipMessage:
        cancel = SipMessage(method="CANCEL", uri=invite.uri)
        cancel.add("Via", invite.get_all("Via")[0])
        for header in ("Max-Forwards", "From", "To", "Call-ID"):
            cancel.add(header, invite.get(header))
        cancel.add("CSeq", "1 CANCEL")
        return cancel

    # Ending -------------------------------------------------------------------------------

    def _end(self, call: Call, by_unit: bool) -> None:
        if call.ended:
            return
        call.ended = True
        if call.retransmit is not None:
            call.retransmit.cancel()
        self._forget(call)
        if call.answer is not None and call.answer.status < 300:
            self._spawn(self.calls.ended(call, by_unit))

    def _forget(self, call: Call) -> None:
        self.dialogs.pop((call.call_id, call.local_tag), None)

    async def hang_up(self, call: Call, wait: bool = True,
                      reason: tuple[int, str] | None = None) -> int | None:
        """End a call from our side: BYE once it is set up (487 before: not answered yet),
        with ``reason`` (a SIP status and its text, RFC 3326) when we say why.
        Returns the status the unit answered the BYE with (None: no answer)."""
        if call.ended:
            return None
        if call.answer is None:  # still deciding: refuse it now (_decide undoes the join)
            self._final(call, 480, "Temporarily Unavailable", b"")
            call.ended = True
            self._forget(call)
            return None
        self._end(call, by_unit=False)
        call.local_cseq = max(call.local_cseq, 1) + 1
        branch = new_branch()
        transport = call.flow.transport.upper()
        port = self.port_for(call.flow.transport)
        bye = SipMessage(method="BYE", uri=call.remote_uri)
        bye.add("Via", f"SIP/2.0/{transport} {self.advertised_host}:{port};branch={branch};rport")
        bye.add("Max-Forwards", "70")
        bye.add("From", call.local_party)
        bye.add("To", call.remote_party)
        bye.add("Call-ID", call.call_id)
        bye.add("CSeq", f"{call.local_cseq} BYE")
        bye.add("User-Agent", USER_AGENT)
        if reason is not None:
            bye.add("Reason", f'SIP ;cause={reason[0]} ;text="{reason[1]}"')
        for route in call.route_set:
            bye.add("Route", route)
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._bye_waiters[branch] = waiter
        sender = self._spawn(self._send_until_answered(call, bye, branch, waiter))
        if not wait:
            return None
        try:
            # The sender's end, not the waiter's: a BYE that could not go (no connection
            # to be had) is not waited for the whole transaction.
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(asyncio.shield(sender), TRANSACTION_S)
            return None
        finally:
            sender.cancel()
            self._bye_waiters.pop(branch, None)

    async def _send_until_answered(self, call: Call, request: SipMessage, branch: str,
                                   waiter: asyncio.Future[int]) -> int | None:
        """Our BYE: sent again over UDP until answered (timer E), once over a stream; the
        status it was answered with (None: no answer, or it could not be sent). Its
        waiter goes when the answer comes or the transaction's time is up, whoever
        hung up and whether or not they wait for it: a BYE of :meth:`hang_up` without
        ``wait`` (a removed unit, a wrong PIN) left it behind, one per call, for ever."""
        interval, waited = T1_S, 0.0
        data = request.to_bytes()
        try:
            flow = await self._flow_for(call, request)
            if flow.closed:
                return None
            flow.send(data)
            while waited < TRANSACTION_S:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(waiter), interval)
                if waiter.done():
                    return waiter.result()
                waited += interval
                if not flow.reliable:
                    flow.send(data)
                interval = min(interval * 2, T2_S)
            return None
        finally:
            self._bye_waiters.pop(branch, None)

    async def _send_in_dialog(self, call: Call, request: SipMessage) -> None:
        """A request of ours in ``call``'s dialog that goes once (our ACK again)."""
        flow = await self._flow_for(call, request)
        if not flow.closed:
            flow.send(request.to_bytes())

    async def _flow_for(self, call: Call, request: SipMessage) -> Flow:
        """Where a request of ours in ``call``'s dialog goes: the dialog's flow while it
        is open. Over TCP or TLS the unit, or a NAT or firewall on the way, may have
        closed that connection since (an idle one, a unit that opens one per
        transaction): a new one is opened, on the dialog's transport, to the port of the
        request's next hop, the first Route's URI or else the unit's Contact (the remote
        target), as RFC 3261 18.1.1 has a client open a connection when none is open.
        Our BYE was written to the closed stream, that is dropped, and a unit we hung up
        on (removed by the operator, its room closed) stayed in a dead call until its
        own media timeout.

        The connection goes to the address the dialog's closed one was with (the unit
        that called, or the one we called), not to the host the Contact names: that is
        whatever a caller wrote, and a call must not make us open connections to other
        hosts of the network. (A unit's Contact names its own address, except behind a
        NAT, where its private address would not be reached anyway.) The closed flow,
        nothing sent, when no connection can be made."""
        flow = call.flow
        if not flow.closed:
            return flow
        routes = request.get_all("Route")
        target = uri_of(routes[0]) if routes else call.remote_uri
        try:
            host, port_text = _host_and_port(target, flow.transport)
            if not 0 < int(port_text) < 65536:
                raise ValueError(f"no port {port_text}")
            address = (flow.address[0], int(port_text))
            call.flow = await self._connect(flow.transport, host, address)
        except (SipParseError, OSError, ValueError, TimeoutError, ssl.SSLError) as exc:
            logger.info("SIP call %s: its %s connection has closed and none could be opened "
                        "to %s at the port of %s (%s): our %s is not sent", call.call_id,
                        flow.transport.upper(), flow.address[0], target, exc, request.method)
            return flow
        return call.flow


def transaction_branch(request: SipMessage) -> str:
    """What tells a request's server transaction apart (RFC 3261 17.2.3), with its
    Call-ID and method: the top Via's branch when it is RFC 3261's (the magic cookie).
    An agent of RFC 2543 sends no branch (or one of its own making, maybe the same for
    every request): its top Via with the CSeq number and From tag, which its copies of a
    request, the CANCEL of an INVITE and the ACK of a refusal share, and its next
    request does not. By the branch alone, every INFO of such a unit after the first
    (each key of its PIN) was taken for a copy of the first, and a re-INVITE for a copy
    of its INVITE."""
    via = request.get_all("Via")[0]
    branch = params(via).get("branch", "")
    if branch.startswith(BRANCH_MAGIC):
        return branch
    return f"{via}|{request.cseq[0]}|{tag_of(request.get('From'))}"


def _sent_by(via: str, transport: str) -> tuple[str, str]:
    """The host and port (the transport's default when none is named) of a Via's sent-by
    (``SIP/2.0/TCP host:port;branch=...``); SipParseError if it has none."""
    parts = via.split(";", 1)[0].split(None, 1)
    if len(parts) != 2 or not parts[1].strip():
        raise SipParseError("a Via without a sent-by")
    return _split_host_port(parts[1].strip(), transport)


def _split_host_port(hostport: str, transport: str) -> tuple[str, str]:
    """``host[:port]`` (an IPv6 host in brackets) as host and port, the port the
    transport's default (5060, 5061 for TLS) when none is named."""
    host, _, port_text = hostport.rpartition(":") if not hostport.endswith("]") else (hostport, "", "")
    if not host or not port_text.isdigit():
        host, port_text = hostport, "5061" if transport == "tls" else "5060"
    return host, port_text


def _host_and_port(uri: str, transport: str) -> tuple[str, str]:
    """The host (an IPv6 one in brackets) and port (the transport's default: 5060, 5061
    for TLS) of a sip: or sips: URI; SipParseError if it is none."""
    return _split_host_port(user_and_host(uri)[1], transport)


def _reason(why: str) -> str:
    """A reason phrase: one line of plain text."""
    return "Bad Request: " + "".join(ch if ch.isprintable() else " " for ch in why)[:80]


def dtmf_key(content_type: str, body: str) -> str | None:
    """The key in an INFO's body, or None when it names none: ``Signal=5`` lines of
    application/dtmf-relay (``Signal=10`` and ``11`` are ``*`` and ``#`` for some units),
    or the bare key of application/dtmf."""
    if content_type == "application/dtmf-relay":
        found = re.search(r"^\s*signal\s*=\s*(\S+)", body, re.IGNORECASE | re.MULTILINE)
        value = found.group(1) if found else ""
    else:
        value = body.strip()
    value = {"10": "*", "11": "#"}.get(value, value).upper()
    return value if len(value) == 1 and value in DTMF_KEYS else None


def sdp_origin(sdp: bytes) -> tuple[str, str] | None:
    """The session id and version of an SDP's ``o=`` line (None: none, or not one)."""
    for line in sdp.decode("utf-8", "replace").splitlines():
        if line.startswith("o="):
            fields = line[2:].split()
            return (fields[1], fields[2]) if len(fields) >= 6 else None
    return None


def same_session(offer: bytes, known: bytes) -> bool:
    """Whether a re-INVITE's SDP is the session the unit has (RFC 3264 8: a description
    whose ``o=`` line keeps its session id and version is unchanged)."""
    found = sdp_origin(offer)
    if found is not None:
        return found == sdp_origin(known)
    return offer.replace(b"\r\n", b"\n").strip() == known.replace(b"\r\n", b"\n").strip()


def session_description(request: SipMessage) -> bytes | None:
    """The SDP in a request's body: all of it (application/sdp), or the application/sdp
    part of a multipart/mixed one (RFC 5621 4.2: every agent takes multipart/mixed; an
    SBC adds ISUP, say); b"" when there is none. None for a body we cannot take (415):
    another type, or a part besides the SDP whose handling is not optional (RFC 3261
    20.11: required, unless it says otherwise)."""
    if not request.body:
        return b""
    content_type = request.get("Content-Type")
    kind = content_type.split(";")[0].strip().lower()
    if kind == "application/sdp":
        return request.body
    if kind != "multipart/mixed":
        return None
    whole = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + request.body)
    sdp = b""
    for part in whole.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        if part.get_content_type() == "application/sdp" and not sdp and isinstance(payload, bytes):
            sdp = payload
        elif str(part.get_param("handling", "required", header="content-disposition")).lower() != "optional":
            return None
    return sdp


def _quoted(text: str) -> str:
    """``text`` fit for a quoted string in a header (a Warning's)."""
    return re.sub(r'["\\\r\n]', " ", text)[:200]
