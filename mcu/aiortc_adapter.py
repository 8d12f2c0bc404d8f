"""The only module that knows aiortc's and aioice's private internals.

We keep aiortc for ICE, DTLS and SRTP, and take over the RTP path:

* incoming: each DTLS transport's ``_handle_rtp_data`` / ``_handle_rtcp_data`` are
  replaced on the instance, so decrypted packets go to the forwarder as bytes; aiortc's
  receivers are never started (no decoder thread, no jitter buffer, no queue to grow);
* outgoing: forwarded packets leave through a :class:`mcu._fanout.Sink`, which the C
  fan-out protects with libsrtp2 directly (the function pylibsrtp binds, on the
  transport's ``_tx_srtp`` session) and sends on a duplicate of the nominated ICE pair's
  socket; our own RTCP is protected with ``_tx_srtp`` and written to the pair's UDP
  transport. aiortc's senders are never started (no encoder, no 50 Hz polling task);
* negotiation: ``RTCRtpSender.send`` / ``RTCRtpReceiver.receive`` are replaced on the
  instance, to learn the negotiated payload types, SSRCs and mid of each transceiver;
* ICE: host candidates on configured addresses (aioice leaves out loopback), optionally
  bound inside a UDP port range, on sockets of our own that a :class:`mcu._fanout.Reader`
  reads in C (:class:`HostSocketTransport`: once keyed, a connection's media never enters
  Python); and ICE restart, which aiortc lacks (:func:`begin_ice_restart`,
  :func:`finish_ice_restart`).

aiortc and aioice are pinned to exact versions (pyproject.toml); :func:`check_internals`
runs at import and names whatever private attribute has gone missing, and
tests/media/test_adapter_contract.py checks the behaviour on real loopback peers.
"""

from __future__ import annotations

import asyncio
import asyncio.selector_events
import fcntl
import logging
import random
import socket
import struct
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aioice
import aioice.ice
import aioice.stun
import aioice.turn
import aioice.utils
import aiortc
import aiortc.sdp as aiortc_sdp
import pylibsrtp
import pylibsrtp._binding
from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
)
from aiortc import rtp as aiortc_rtp
from aiortc.rtcdtlstransport import RTCDtlsTransport, State
from aiortc.rtcicetransport import candidate_to_aioice

from mcu._fanout import Inbound, Reader, Sink, unprotect
from mcu.udp import CReadTransport

logger = logging.getLogger(__name__)

PINNED_AIORTC = "1.16.0"
PINNED_AIOICE = "0.13.0"


class AdapterError(RuntimeError):
    """aiortc/aioice are not the versions this adapter was written against."""


# What aiortc's receive path keeps per receiver: a jitter buffer, a NACK generator and a
# bandwidth estimator (for video about 100 KiB, mostly the estimator's 1,000 one-
# millisecond rate buckets). That path never runs here (take_over_transceiver), and a
# participant has 16 transceivers: keeping them was half of a participant's memory.
_UNUSED_RECEIVER_STATE = ("_RTCRtpReceiver__jitter_buffer", "_RTCRtpReceiver__nack_generator",
                          "_RTCRtpReceiver__remote_bitrate_estimator")

# What an ICE restart resets on aioice's Connection (begin_ice_restart, finish_ice_restart).
_RESTART_STATE = ("_local_username", "_local_password", "_check_list", "_check_list_done",
                  "_check_list_state", "_nominating", "_remote_candidates",
                  "_remote_candidates_end", "_closing")


def check_internals() -> None:
    """Fail loudly, naming each private name we rely on that is missing."""
    problems = []
    if aiortc.__version__ != PINNED_AIORTC:
        problems.append(f"aiortc {aiortc.__version__} installed, adapter pinned to {PINNED_AIORTC}")
    if getattr(aioice, "__version__", PINNED_AIOICE) != PINNED_AIOICE:
        problems.append(f"aioice {aioice.__version__} installed, adapter pinned to {PINNED_AIOICE}")
    required: list[tuple[object, str]] = [
        (RTCDtlsTransport, "_handle_rtp_data"),
        (RTCDtlsTransport, "_handle_rtcp_data"),
        (RTCDtlsTransport, "_send_rtp"),
        (RTCDtlsTransport, "_recv_next"),
        (RTCRtpSender, "send"),
        (RTCRtpReceiver, "receive"),
        (aioice.ice, "get_host_addresses"),
        (aioice.ice, "server_reflexive_candidate"),
        (aioice.ice, "StunProtocol"),
        (aioice.ice, "Candidate"),
        (aioice.ice, "candidate_foundation"),
        (aioice.ice, "candidate_priority"),
        (aioice.ice.Connection, "get_component_candidates"),
        (aioice.ice.Connection, "data_received"),
        (aioice.ice.Connection, "_unfreeze_initial"),
        (aioice.ice.Connection, "_check_periodic"),
        (aioice.ice, "ICE_COMPLETED"),
        (aioice.utils, "random_string"),
        (aioice.ice.StunProtocol, "datagram_received"),
        (aioice.ice.StunProtocol, "connection_made"),
        (aioice.turn, "UDP_SOCKET_BUFFER_SIZE"),
        (aiortc_rtp.RtcpPacket, "parse"),
        (asyncio.selector_events, "_SelectorDatagramTransport"),
        (pylibsrtp._binding.lib, "srtp_protect"),
        (pylibsrtp._binding.lib, "srtp_unprotect"),
        (pylibsrtp._binding.lib, "srtp_unprotect_rtcp"),
    ]
    for owner, name in required:
        if not hasattr(owner, name):
            problems.append(f"{getattr(owner, '__name__', owner)}.{name} is missing")
    # Attributes set in __init__ cannot be seen on the class; look in a fresh instance.
    connection = aioice.ice.Connection(ice_controlling=False)
    for name in ("_nominated", "_protocols", "stun_server", "_queue", *_RESTART_STATE):
        if not hasattr(connection, name):
            problems.append(f"aioice Connection instance has no {name}")
    # tap_transport bounds the queue that non-STUN datagrams wait in for aiortc.
    queue = getattr(connection, "_queue", None)
    if isinstance(queue, asyncio.Queue):
        connection.data_received(b"\x16", 1)
        if queue.qsize() != 1:
            problems.append("aioice Connection.data_received no longer queues in _queue")
    else:
        problems.append("aioice Connection._queue is not an asyncio.Queue")
    session = pylibsrtp.Session()
    if not hasattr(session, "_srtp"):
        problems.append("pylibsrtp Session instance has no _srtp")
    receiver = RTCRtpReceiver("video", types.SimpleNamespace(state="new"))
    for name in _UNUSED_RECEIVER_STATE:
        if not hasattr(receiver, name):
            problems.append(f"RTCRtpReceiver instance has no {name}")
    if problems:
        raise AdapterError("aiortc adapter cannot run: " + "; ".join(problems))


check_internals()


# ICE ---------------------------------------------------------------------------------

# CPython's selector datagram transport reads every datagram into a fresh 256 KiB buffer,
# which glibc serves with mmap/munmap: a system call pair per received packet. Media
# datagrams stay under the path MTU, so a small buffer is enough (uvloop does likewise).
DATAGRAM_READ_SIZE = 4096


def _tune_datagram_reads() -> None:
    transport_class = asyncio.selector_events._SelectorDatagramTransport  # type: ignore[attr-defined]
    if transport_class.max_size > DATAGRAM_READ_SIZE:
        transport_class.max_size = DATAGRAM_READ_SIZE

_original_get_component_candidates = aioice.ice.Connection.get_component_candidates
_original_get_host_addresses = aioice.ice.get_host_addresses


class HostSocketTransport(CReadTransport):
    """An ICE host candidate's UDP socket, read in C (:class:`mcu.udp.CReadTransport`).

    Once :func:`tap_transport` keys its Reader, the connection's SRTP and SRTCP go
    straight to its Inbound; everything else (STUN, DTLS, media before the keys) to
    aioice's protocol. Sends (STUN, DTLS, our RTCP through aiortc) go out directly.
    """


def _bind_host_socket(connection: aioice.ice.Connection, component: int,
                      address: str, port: int) -> aioice.ice.StunProtocol:
    """A host candidate on ``address``:``port`` (0: any free port), read in C."""
    sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.bind((address, port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, aioice.turn.UDP_SOCKET_BUFFER_SIZE)
    except OSError:
        sock.close()
        raise
    protocol = aioice.ice.StunProtocol(connection)
    protocol.connection_made(HostSocketTransport(sock, protocol))
    host, bound_port = sock.getsockname()[:2]
    protocol.local_candidate = aioice.ice.Candidate(
        foundation=aioice.ice.candidate_foundation("host", "udp", host),
        component=component, transport="udp",
        priority=aioice.ice.candidate_priority(component, "host"),
        host=host, port=bound_port, type="host")
    return protocol


def configure_ice(addresses: list[str], port_range: tuple[int, int] | None) -> None:
    """Advertise host candidates on ``addresses`` (all interfaces if empty), in a port range.

    Process-wide: aioice reads these from module globals. The host candidates' sockets
    are ours (:class:`HostSocketTransport`).
    """
    _tune_datagram_reads()
    aioice.ice.get_host_addresses = _original_get_host_addresses  # type: ignore[assignment]
    if not addresses and not _original_get_host_addresses(True, True):
        # aioice leaves loopback out: on a machine with nothing else (a container with no
        # network yet, a test namespace) every offer would have no candidate at all.
        addresses = ["127.0.0.1"]
        logger.warning("no network interface but loopback: media advertised on 127.0.0.1 "
                       "only (set MULTIPOINT_MEDIA_ADDRESSES to the addresses to use)")
    if addresses:
        chosen = list(addresses)
        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: [  # type: ignore[assignment]
            a for a in chosen if (":" in a and use_ipv6) or (":" not in a and use_ipv4)
        ]
    ports = [0] if port_range is None else list(range(port_range[0], port_range[1] + 1))

    async def get_component_candidates(self: aioice.ice.Connection, component: int,
                                       addresses: list[str], timeout: int = 5) -> list[Any]:
        # Bind host candidates ourselves, then let aioice add the server-reflexive
        # and relayed ones for the same sockets.
        candidates = []
        for address in addresses:
            for port in random.sample(ports, len(ports)):
                try:
                    protocol = _bind_host_socket(self, component, address, port)
                    break
                except OSError:
                    continue
            else:
                if port_range is not None:
                    logger.warning("no free UDP port in %d-%d on %s", port_range[0], port_range[1], address)
                else:
                    logger.warning("could not bind a UDP socket on %s", address)
                continue
            self._protocols.append(protocol)
            candidates.append(protocol.local_candidate)
            if self.stun_server and ":" not in protocol.local_candidate.host:
                try:
                    reflexive, _ = await asyncio.wait_for(
                        aioice.ice.server_reflexive_candidate(protocol, self.stun_server), timeout)
                    candidates.append(reflexive)
                except (TimeoutError, OSError, aioice.stun.TransactionError):
                    pass
        # With no addresses, aioice gathers only what needs no host socket (TURN relays).
        candidates += await _original_get_component_candidates(self, component, [], timeout)
        return candidates

    aioice.ice.Connection.get_component_candidates = get_component_candidates  # type: ignore[method-assign]


def ice_servers(stun: list[str], turn: list[str], username: str, password: str) -> list[RTCIceServer]:
    servers = [RTCIceServer(urls=url) for url in stun]
    servers += [RTCIceServer(urls=url, username=username, credential=password) for url in turn]
    return servers


def new_peer_connection(servers: list[RTCIceServer]) -> RTCPeerConnection:
    # Always an explicit list: with none, aiortc falls back to a public STUN server.
    # max-bundle: every transceiver on one transport from the start (with "balanced",
    # aiortc 1.16 leaves later video m-lines on a transport that never connects).
    return RTCPeerConnection(RTCConfiguration(iceServers=list(servers),
                                              bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))


# ICE restart -------------------------------------------------------------------------
#
# aiortc starts ICE once and never again: new credentials in a later offer or answer are
# ignored, and a client whose network went away for a few seconds could only join anew.
# A restart here keeps the peer connection, its DTLS and SRTP sessions and its sockets
# (our host candidates stay what they were): only the ICE credentials change, and the
# connectivity checks run again against the candidates of the client's new answer. The
# pair in use stays nominated until a new one is, so nothing stops for a restart that
# was not needed.

ICE_RESTART_TIMEOUT_S = 10.0


def _ice_connections(pc: RTCPeerConnection) -> list[aioice.ice.Connection]:
    transports = {id(t.receiver.transport): t.receiver.transport for t in pc.getTransceivers()
                  if t.receiver.transport is not None}
    return [_ice_connection(dtls) for dtls in transports.values()]


def host_sockets(pc: RTCPeerConnection) -> list[CReadTransport]:
    """The connection's host candidates' sockets, read in C (those open now): what
    :meth:`CReadTransport.read_on_tick` can turn to reading on a tick."""
    return [protocol.transport for connection in _ice_connections(pc)
            for protocol in connection._protocols
            if isinstance(getattr(protocol, "transport", None), HostSocketTransport)
            and not protocol.transport.is_closing()]


def begin_ice_restart(pc: RTCPeerConnection) -> None:
    """Give the connection new local ICE credentials: the next offer restarts ICE.

    Raises ConnectionError when ICE has already given up (consent expired: the
    connection is closing) or was never started.
    """
    connections = _ice_connections(pc)
    if not connections:
        raise ConnectionError("no ICE transport to restart")
    for connection in connections:
        if connection._closing or connection.remote_password is None:
            raise ConnectionError("ICE is closed or was never started")
    for connection in connections:
        connection._local_username = aioice.utils.random_string(4)
        connection._local_password = aioice.utils.random_string(22)


def _bundled_media(sdp: str) -> Any:
    """The first accepted media section: every section shares its transport (BUNDLE)."""
    return next((m for m in aiortc_sdp.SessionDescription.parse(sdp).media if m.port), None)


def offer_restarts_ice(pc: RTCPeerConnection, offer_sdp: str) -> bool:
    """Whether this offer has other ICE credentials than the connection knows (a test
    client answering the server's restart: it calls begin_ice_restart before its answer
    and finish_ice_restart with the offer after it)."""
    media = _bundled_media(offer_sdp)
    connections = _ice_connections(pc)
    return media is not None and bool(connections) and connections[0].remote_username not in (
        None, media.ice.usernameFragment)


async def finish_ice_restart(pc: RTCPeerConnection, remote_sdp: str,
                             timeout: float = ICE_RESTART_TIMEOUT_S) -> bool:
    """After the other side's description in a restart (the answer to our restart offer):
    check its candidates and nominate a new pair.

    True once a new pair is nominated (sinks follow it: :func:`bind_sink`); False when no
    pair worked within ``timeout`` (the old pair stays, and the client may ask again).
    A controlled agent (a client answering) only takes the new credentials and
    candidates: the controlling side's checks nominate.
    """
    media = _bundled_media(remote_sdp)
    if media is None:
        return False
    results = await asyncio.gather(*(
        _restart_checks(connection, media, timeout) for connection in _ice_connections(pc)))
    return all(results)


async def _restart_checks(connection: aioice.ice.Connection, media: Any, timeout: float) -> bool:
    if connection._closing:
        return False
    for pair in connection._check_list:
        if pair.task is not None:
            pair.task.cancel()
    connection.remote_username = media.ice.usernameFragment
    connection.remote_password = media.ice.password
    connection._check_list = []
    connection._check_list_done = False
    outcome_queue: asyncio.Queue[int] = asyncio.Queue()  # this restart's: a later one makes its own
    connection._check_list_state = outcome_queue
    connection._nominating = set()
    connection._remote_candidates = []
    connection._remote_candidates_end = False
    for candidate in media.ice_candidates:
        await connection.add_remote_candidate(candidate_to_aioice(candidate))
    # Set directly, not through add_remote_candidate(None): that would find the old pair
    # still nominated and call the new check list complete before any check ran. As the
    # controlling agent every successful check of ours nominates (aggressive nomination),
    # so the list completes exactly when a new pair is nominated.
    connection._remote_candidates_end = True
    if not connection.ice_controlling:
        return True
    connection._unfreeze_initial()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while connection._check_periodic() and loop.time() < deadline:
            await asyncio.sleep(0.02)  # pacing, as aioice's connect() does
        outcome = await asyncio.wait_for(outcome_queue.get(), max(0.0, deadline - loop.time()))
    except TimeoutError:
        outcome = None
    finally:
        for pair in connection._check_list:
            if pair.task is not None:
                pair.task.cancel()
    return outcome == aioice.ice.ICE_COMPLETED


# Negotiated parameters ---------------------------------------------------------------


@dataclass
class NegotiatedRtp:
    """What negotiation settled for one transceiver, in plain values."""

    kind: str
    mid: str | None
    payload_type: int
    clock_rate: int
    codec: str  # e.g. "video/VP8"
    rtx_payload_type: int | None = None
    ssrcs: list[int] = field(default_factory=list)  # remote SSRCs (receive side)
    rtx_ssrcs: dict[int, int] = field(default_factory=dict)  # RTX SSRC -> media SSRC


def _negotiated(kind: str, parameters: Any) -> NegotiatedRtp:
    main = parameters.codecs[0]
    rtx_pt = next((c.payloadType for c in parameters.codecs
                   if c.mimeType.lower().endswith("/rtx")
                   and c.parameters.get("apt") == main.payloadType), None)
    result = NegotiatedRtp(kind=kind, mid=parameters.muxId, payload_type=main.payloadType,
                           clock_rate=main.clockRate, codec=main.mimeType,
                           rtx_payload_type=rtx_pt)
    for encoding in getattr(parameters, "encodings", []) or []:
        if encoding.ssrc:
            result.ssrcs.append(encoding.ssrc)
            if encoding.rtx is not None and encoding.rtx.ssrc:
                result.rtx_ssrcs[encoding.rtx.ssrc] = encoding.ssrc
    return result


def take_over_transceiver(
    transceiver: RTCRtpTransceiver,
    on_receive: Callable[[NegotiatedRtp, RTCDtlsTransport], None] | None,
    on_send: Callable[[NegotiatedRtp, int, int, RTCDtlsTransport], None] | None,
) -> None:
    """Stop aiortc from running this transceiver's sender/receiver; report negotiation.

    The receiver's own receive state is dropped, so its DTLS transport must be tapped
    (:func:`tap_transport`): aiortc's receive path could not run on it any more.

    ``on_receive`` gets the parameters and the DTLS transport the media arrives on.
    ``on_send`` gets the parameters, our SSRC and RTX SSRC (which aiortc wrote into the
    SDP) and the DTLS transport to send on. Called again after each renegotiation.
    """
    kind = transceiver.kind
    receiver, sender = transceiver.receiver, transceiver.sender
    for name in _UNUSED_RECEIVER_STATE:
        setattr(receiver, name, None)

    async def receive(parameters: Any) -> None:
        if on_receive is not None:
            on_receive(_negotiated(kind, parameters), receiver.transport)

    async def send(parameters: Any) -> None:
        if on_send is not None:
            on_send(_negotiated(kind, parameters), sender._ssrc, sender._rtx_ssrc, sender.transport)

    receiver.receive = receive  # type: ignore[method-assign]
    sender.send = send  # type: ignore[method-assign]


def sender_ssrc(transceiver: RTCRtpTransceiver) -> int:
    return transceiver.sender._ssrc


# Packet path ------------------------------------------------------------------------

# The C fan-out calls libsrtp2's srtp_protect / srtp_unprotect / srtp_unprotect_rtcp
# (each ``srtp_err_status_t f(srtp_t, void *, int *)``) itself, on the sessions aiortc
# made: pylibsrtp bundles libsrtp2 (2.7.0 in pylibsrtp 1.0.0) and binds them with cffi.
_SRTP_FFI = pylibsrtp._binding.ffi


def _srtp_function(name: str) -> int:
    return int(_SRTP_FFI.cast("uintptr_t", _SRTP_FFI.addressof(pylibsrtp._binding.lib, name)))


_SRTP_PROTECT = _srtp_function("srtp_protect")
_SRTCP_PROTECT = _srtp_function("srtp_protect_rtcp")
_SRTP_UNPROTECT = _srtp_function("srtp_unprotect")
_SRTP_UNPROTECT_RTCP = _srtp_function("srtp_unprotect_rtcp")


def unprotect_with(srtp: pylibsrtp.Session, packet: bytes) -> bytes | None:
    """Decrypt one received SRTP or SRTCP packet; None if not authentic, replayed or too long."""
    rtcp = len(packet) > 1 and 192 <= packet[1] <= 223
    return unprotect(_SRTP_UNPROTECT_RTCP if rtcp else _SRTP_UNPROTECT, srtp_session_address(srtp), packet)


def unprotector(srtp: pylibsrtp.Session) -> Callable[[bytes], bytes | None]:
    """:func:`unprotect_with` on one session, its libsrtp address looked up once (per
    packet on a pipe between nodes); the caller keeps ``srtp`` alive while it uses it."""
    session = srtp_session_address(srtp)

    def unprotect_one(packet: bytes) -> bytes | None:
        rtcp = 192 <= packet[1] <= 223
        return unprotect(_SRTP_UNPROTECT_RTCP if rtcp else _SRTP_UNPROTECT, session, packet)

    return unprotect_one


def srtp_session_address(srtp: pylibsrtp.Session) -> int:
    """The libsrtp session (``srtp_t``) inside a pylibsrtp Session, for C; valid while it
    lives."""
    return int(_SRTP_FFI.cast("uintptr_t", srtp._srtp[0]))


# For a Reader's routes (mcu/pipe.py): the function C decrypts a route's RTP with.
SRTP_UNPROTECT = _SRTP_UNPROTECT


RtpHandler = Callable[[bytes, int], None]
RtcpHandler = Callable[[bytes], None]

# aioice's Connection queues every datagram that is not STUN (``Connection._queue``, an
# unbounded asyncio.Queue) for aiortc's DTLS transport, which starts reading it only
# once the answer is in and ICE has connected; and aioice takes such datagrams from any
# source address. Until then, anyone who learns the port could fill memory. What waits
# there legitimately is a DTLS flight or two (and media sent before the DTLS keys):
# a few datagrams, each under the path MTU.
MAX_QUEUED_DATAGRAMS = 64
MAX_UNKEYED_DATAGRAM_BYTES = 2048


def _ice_connection(dtls: RTCDtlsTransport) -> aioice.ice.Connection:
    return dtls.transport._connection


def queued_datagrams(dtls: RTCDtlsTransport) -> int:
    """Datagrams waiting in aioice's queue for this transport (for tests and checks)."""
    return _ice_connection(dtls)._queue.qsize()


def tap_transport(dtls: RTCDtlsTransport, on_rtp: RtpHandler, on_rtcp: RtcpHandler,
                  on_error: Callable[[BaseException], None],
                  on_dropped: Callable[[], None] | None = None, inbound: Inbound | None = None) -> None:
    """Route this transport's decrypted packets to our handlers.

    With ``inbound``, each keyed datagram goes to its ``take()`` instead, which decrypts
    and handles it in C (mcu/_fanout.c), calling the handlers its Python needs; and once
    the keys exist the connection's host sockets hand their media to it straight from
    C (:class:`HostSocketTransport`): only relayed media (TURN) still comes this way.

    Once SRTP is keyed, media datagrams go straight from the ICE connection to the
    handlers (decrypted here, instead of a hop through aioice's queue and three
    resumptions of aiortc's receive coroutines). Anything else (DTLS, or media before
    the keys exist) takes aiortc's own path, which ends in the same handlers.

    An exception escaping into aiortc's receive loop would close the connection of the
    participant who *sent* the packet, so nothing escapes: errors go to ``on_error``.

    What takes aiortc's path waits in aioice's queue, which nobody reads before the
    answer: it is bounded here (:data:`MAX_QUEUED_DATAGRAMS`; before the SRTP keys, no
    datagram over :data:`MAX_UNKEYED_DATAGRAM_BYTES`). Each datagram dropped for that
    calls ``on_dropped``.
    """

    def dispatch(data: bytes) -> None:
        try:
            if 192 <= data[1] <= 223:
                on_rtcp(data)
            else:
                on_rtp(data, 0)
        except Exception as exc:
            on_error(exc)

    async def handle_rtp_data(data: bytes, arrival_time_ms: int) -> None:
        dispatch(data)

    async def handle_rtcp_data(data: bytes) -> None:
        dispatch(data)

    dtls._handle_rtp_data = handle_rtp_data  # type: ignore[method-assign]
    dtls._handle_rtcp_data = handle_rtcp_data  # type: ignore[method-assign]

    connection = _ice_connection(dtls)
    queue = connection._queue
    queue_datagram = connection.data_received
    keyed: pylibsrtp.Session | None = None  # the inbound session, once DTLS made it
    session = 0  # its libsrtp address

    def queue_bounded(data: bytes, component: int) -> None:
        if queue.qsize() >= MAX_QUEUED_DATAGRAMS or (
                keyed is None and len(data) > MAX_UNKEYED_DATAGRAM_BYTES):
            if on_dropped is not None:
                on_dropped()
            return
        queue_datagram(data, component)

    def data_received(data: bytes, component: int) -> None:
        nonlocal keyed, session
        if len(data) < 2 or not 127 < data[0] < 192:  # DTLS: aiortc's path
            queue_bounded(data, component)
            return
        if keyed is None:
            if dtls._rx_srtp is None:  # media before the keys: aiortc's path too
                queue_bounded(data, component)
                return
            keyed, session = dtls._rx_srtp, srtp_session_address(dtls._rx_srtp)
            if inbound is not None:  # from now on the host sockets' media stays in C
                for protocol in connection._protocols:
                    transport = getattr(protocol, "transport", None)
                    if isinstance(transport, HostSocketTransport):
                        transport.reader.key(inbound, session, keyed, on_error)
        # dispatch() inlined: this runs once per received packet. A packet that is not
        # authentic, or is replayed, is dropped (as aiortc does).
        try:
            if inbound is not None:
                inbound.take(session, data)
            elif 192 <= data[1] <= 223:
                plain = unprotect(_SRTP_UNPROTECT_RTCP, session, data)
                if plain is not None:
                    on_rtcp(plain)
            else:
                plain = unprotect(_SRTP_UNPROTECT, session, data)
                if plain is not None:
                    on_rtp(plain, 0)
        except Exception as exc:
            on_error(exc)

    if inbound is not None:
        inbound.set_unprotect(_SRTP_UNPROTECT, _SRTP_UNPROTECT_RTCP)
    connection.data_received = data_received  # type: ignore[method-assign]


class MalformedStun:
    """STUN datagrams aioice could not handle (a truncated attribute, say), process-wide.

    aioice lets anything but ValueError out of its parser (a 3-byte PRIORITY raises
    struct.error), and the event loop logged each with a full traceback: an
    unauthenticated sender could turn 28 bytes into 1 KiB of log. They are dropped and
    counted; one line is logged at most every :attr:`LOG_INTERVAL_S`.
    """

    LOG_INTERVAL_S = 60.0
    count = 0
    _logged_at = -LOG_INTERVAL_S

    @classmethod
    def dropped(cls, exc: BaseException, addr: tuple[Any, ...]) -> None:
        cls.count += 1
        now = time.monotonic()
        if now - cls._logged_at >= cls.LOG_INTERVAL_S:
            logger.warning("dropped malformed STUN from %s (%s: %s); %d dropped in all",
                           addr[0], type(exc).__name__, exc, cls.count)
            cls._logged_at = now


def malformed_stun_count() -> int:
    return MalformedStun.count


def _skip_stun_parse_for_media() -> None:
    """aioice parses every datagram as STUN first, failing by exception for media.

    STUN messages start with two zero bits (RFC 5389), RTP and RTCP with version 2
    (RFC 7983), so media can go straight to the connection. What aioice fails on
    otherwise is dropped and counted (:class:`MalformedStun`).
    """
    original = aioice.ice.StunProtocol.datagram_received
    if getattr(original, "multipoint_fast_path", False):
        return

    def datagram_received(self: aioice.ice.StunProtocol, data: bytes, addr: tuple[Any, ...]) -> None:
        if data and 127 < data[0] < 192:
            self.receiver.data_received(data, self.local_candidate.component)
            return
        try:
            original(self, data, addr)
        except Exception as exc:  # from a datagram anyone can send: never a traceback
            MalformedStun.dropped(exc, addr)

    datagram_received.multipoint_fast_path = True  # type: ignore[attr-defined]
    aioice.ice.StunProtocol.datagram_received = datagram_received  # type: ignore[method-assign]


_skip_stun_parse_for_media()


def packet_writer(dtls: RTCDtlsTransport, sink: Sink | None = None) -> Callable[[bytes], None]:
    """A synchronous ``write(packet)``: SRTP-protect and send on the nominated ICE pair.

    With the connection's ``sink`` RTCP (our reports and feedback, most of what is
    written here) goes out through it, protected and sent in C; the sink is pointed at
    the pair first if ICE nominated another since (:func:`bind_sink`).
    Raises ConnectionError when the transport is not (or no longer) connected.
    """
    connection = dtls.transport._connection
    pair: Any = None
    sendto: Callable[[bytes, Any], None] | None = None
    address: Any = None

    def write(packet: bytes) -> None:
        nonlocal pair, sendto, address
        if dtls._state is not State.CONNECTED:
            raise ConnectionError("DTLS transport is not connected")
        nominated = connection._nominated.get(1)
        if nominated is not pair:  # first use, or ICE chose another pair
            if nominated is None:
                raise ConnectionError("no nominated ICE pair")
            pair, sendto, address = nominated, nominated.protocol.transport.sendto, nominated.remote_addr
        srtp = dtls._tx_srtp
        if not 192 <= packet[1] <= 223:
            sendto(srtp.protect(packet), address)
            return
        if sink is not None:
            owner = sink.owner
            if owner is None or owner[0] is not nominated or owner[1] is not srtp:
                bind_sink(sink, dtls)
                owner = sink.owner
            if owner is not None and owner[0] is nominated:
                sink.send_rtcp(packet)
                return
        sendto(srtp.protect_rtcp(packet), address)

    return write


def bind_sink(sink: Sink, dtls: RTCDtlsTransport) -> None:
    """Point ``sink`` at the transport's nominated ICE pair and outbound SRTP session.

    Unbinds it while the transport is not connected. Cheap when nothing changed: called
    on every DTLS state change and every RTCP interval (ICE may nominate another pair).
    """
    srtp = dtls._tx_srtp
    pair = dtls.transport._connection._nominated.get(1) if dtls._state is State.CONNECTED else None
    transport = getattr(pair.protocol, "transport", None) if pair is not None else None
    if pair is None or srtp is None or transport is None or transport.is_closing():
        sink.unbind()
        return
    owner = sink.owner
    if owner is not None and owner[0] is pair and owner[1] is srtp:
        return
    point_sink(sink, transport.get_extra_info("socket").fileno(), pair.remote_addr, srtp, (pair, srtp))


def point_sink(sink: Sink, fileno: int, address: tuple[Any, ...], srtp: pylibsrtp.Session,
               owner: tuple[Any, pylibsrtp.Session]) -> None:
    """Bind ``sink`` to send from socket ``fileno`` to ``address``, protecting with ``srtp``.

    ``owner`` (which must hold ``srtp``) stays referenced by the sink while bound: the
    libsrtp session is freed with its Session object.
    """
    if owner[-1] is not srtp:
        raise ValueError("the owner must hold the SRTP session")
    sink.bind(fileno, address[0], address[1], _SRTP_PROTECT, srtp_session_address(srtp), owner,
              _SRTCP_PROTECT)


def on_dtls_state(dtls: RTCDtlsTransport, handler: Callable[[], None]) -> None:
    dtls.on("statechange", handler)


SIOCGSTAMPNS = 0x8907  # linux/sockios.h: receive time of the last datagram read


def arrival_clock(dtls: RTCDtlsTransport) -> Callable[[], float | None]:
    """For measurement (bench/): a function giving the kernel's receive time (seconds,
    CLOCK_REALTIME) of the last datagram read from the transport's nominated ICE socket.

    Called from the handlers :func:`tap_transport` calls, it times the packet being
    handled: when the kernel queued it, not when the event loop got round to it. On
    loopback that is the moment the sender's ``sendto`` delivered it. None when unknown
    (the first call turns the socket's timestamps on).
    """
    connection = dtls.transport._connection
    known: list[Any] = [None, -1]  # nominated pair, its reader or its socket's descriptor

    def last_arrival() -> float | None:
        pair = connection._nominated.get(1)
        if pair is None:
            return None
        if pair is not known[0]:
            transport = getattr(pair.protocol, "transport", None)
            if transport is None:
                return None
            if isinstance(transport, HostSocketTransport):
                # Read in batches: the socket's last datagram may be a later one; the
                # reader keeps the time of the one in hand.
                transport.reader.stamp_arrivals()
                known[:] = [pair, transport.reader]
            else:
                known[:] = [pair, transport.get_extra_info("socket").fileno()]
        if isinstance(known[1], Reader):
            return known[1].arrival or None
        try:
            seconds, nanoseconds = struct.unpack("@qq", fcntl.ioctl(known[1], SIOCGSTAMPNS, bytes(16)))
        except OSError:
            return None
        return seconds + nanoseconds / 1e9

    return last_arrival


def stop_bandwidth_reports(pc: RTCPeerConnection) -> None:
    """A client connection that sends no REMB of its own: its receivers' estimators go.
    For tests that write a client's bandwidth reports themselves (an estimate of the
    client's own would overwrite theirs at its own moments)."""
    for transceiver in pc.getTransceivers():
        transceiver.receiver._RTCRtpReceiver__remote_bitrate_estimator = None


def check_answer(sdp: str) -> None:
    """Refuse (ValueError) an answer aiortc would take but cannot connect with.

    aiortc accepts an answer whose media carry no DTLS fingerprint or no ICE credentials;
    its connection task then fails in the background (an assertion, "Task exception was
    never retrieved") and the connection cannot even be closed cleanly; so does a BUNDLE
    group naming sections that are not there (both found by fuzz/sdp.py). Every media
    section must have its mid, fingerprint and ICE credentials, all in one BUNDLE group.
    """
    description = aiortc_sdp.SessionDescription.parse(sdp)
    mids = [media.rtp.muxId for media in description.media]
    if not all(mids) or len(set(mids)) != len(mids):
        raise ValueError("every media section needs a mid of its own")
    # The server offers every section on one transport: the answer must bundle them all
    # (a BUNDLE naming something else left aiortc unable to close the connection).
    bundles = [group for group in description.group if group.semantic == "BUNDLE"]
    accepted = {mid for mid, media in zip(mids, description.media, strict=True) if media.port}
    if len(bundles) != 1 or not accepted <= set(map(str, bundles[0].items)) \
            or not set(map(str, bundles[0].items)) <= set(mids):
        raise ValueError("the answer must bundle all its media sections in one BUNDLE group")
    for media in description.media:
        if media.port == 0:  # rejected by the client: nothing to connect
            continue
        if media.dtls is None or not media.dtls.fingerprints:
            raise ValueError(f"the {media.kind} section has no DTLS fingerprint")
        if not media.ice.usernameFragment or not media.ice.password:
            raise ValueError(f"the {media.kind} section has no ICE credentials")


def parse_rtcp(data: bytes) -> list[Any]:
    """Split a compound RTCP packet (raises ValueError when malformed)."""
    return aiortc_rtp.RtcpPacket.parse(data)


def nack_lost(packet: Any) -> list[int]:
    """The sequence numbers a generic NACK asks for, as 16-bit numbers.

    aiortc adds the bitmask's offsets to the PID without wrapping, so PID 65535 with a
    bit set gives 65536 (found by fuzz/rtcp.py): the leg's history has it as 0.
    """
    return [seq & 0xFFFF for seq in packet.lost]


def unpack_remb(fci: bytes) -> tuple[int, list[int]]:
    """A REMB's bitrate and SSRCs (raises ValueError when malformed).

    aiortc reads as many SSRCs as the count says, past the end of a short FCI, with a
    bare struct.error (found by fuzz/rtcp.py).
    """
    try:
        return aiortc_rtp.unpack_remb_fci(fci)
    except struct.error as exc:
        raise ValueError(f"truncated REMB: {exc}") from None


RtcpSr = aiortc_rtp.RtcpSrPacket
RtcpRr = aiortc_rtp.RtcpRrPacket
RtcpPsfb = aiortc_rtp.RtcpPsfbPacket
RtcpRtpfb = aiortc_rtp.RtcpRtpfbPacket
RtcpBye = aiortc_rtp.RtcpByePacket


def decoder_running(transceiver: RTCRtpTransceiver) -> bool:
    """Whether aiortc started its decoder thread for this receiver (it must not, here)."""
    return transceiver.receiver._RTCRtpReceiver__decoder_thread is not None  # type: ignore[attr-defined]
