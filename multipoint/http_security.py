"""What every HTTP answer of the service gets: the client as a trusted proxy reports it,
security headers, and an access log without secrets.

Behind a reverse proxy (docker/nginx.conf) the TCP peer is the proxy: its
``X-Forwarded-For`` and ``X-Forwarded-Proto`` are believed only when the peer is one of
``MULTIPOINT_TRUSTED_PROXIES``, and then the request is handed on as the client made it
(``request.remote``, ``request.secure``), so per-address limits and the Secure flag of
cookies see the real client and scheme everywhere.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

FORWARDED_FOR = web.RequestKey("forwarded_for", str)  # the client a trusted proxy named
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Pages with no policy of their own (the call page, the self-test): scripts and styles
# only from this origin, never framed. WebSockets may go to any host: a call page follows
# a redirect to the front of another node (docs/workers.md), whose name it learns then.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
            "media-src 'self' blob:; connect-src 'self' ws: wss:; object-src 'none'; "
            "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HSTS = "max-age=31536000"
# Query parameters whose values are secrets (join and self-test tokens, API tokens).
# A secret may also ride URL-encoded inside another parameter (a sign-in page's
# ``next=%2Fcall%2Fx%3Ftoken%3D...``): its value then ends at an encoded ``&``.
SECRET_PARAMETER = re.compile(r"((?:^|[?&;])(?:token|access_token|secret|password)=)[^&;#]*",
                              re.IGNORECASE)
ENCODED_SECRET = re.compile(r"((?:%3F|%26|%3B)(?:token|access_token|secret|password)%3D)"
                            r"(?:(?!%26|%3B|%23)[^&;#])*", re.IGNORECASE)


def trusted_networks(proxies: Iterable[str]) -> tuple[Network, ...]:
    """``MULTIPOINT_TRUSTED_PROXIES`` entries (addresses or CIDR networks) as networks."""
    return tuple(ipaddress.ip_network(proxy.strip(), strict=False) for proxy in proxies)


def is_trusted(peer: str | None, networks: tuple[Network, ...]) -> bool:
    if not peer or not networks:
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:  # a Unix socket peer, say
        return False
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # an IPv4 proxy seen by a dual-stack (::) listener
    return any(address in network for network in networks)


def forwarded_client(header: str, networks: tuple[Network, ...]) -> str | None:
    """The client in ``X-Forwarded-For``: the nearest address not itself a trusted proxy
    (proxies append, so whatever the client wrote itself sits further left)."""
    hops = [hop.strip() for hop in header.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not is_trusted(hop, networks):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return None  # garbage where an address should be: keep the peer
    return hops[0] if hops else None


def forwarded_middleware(networks: tuple[Network, ...]) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def forwarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_trusted(request.remote, networks):
            changes: dict[str, str] = {}
            client = forwarded_client(request.headers.get("X-Forwarded-For", ""), networks)
            if client:
                changes["remote"] = client
                request[FORWARDED_FOR] = client  # the access log gets this request, not the clone
            scheme = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
            if scheme in ("http", "https"):
                changes["scheme"] = scheme
            if changes:
                request = request.clone(**changes)
        return await handler(request)

    return forwarded


def _secure(request: web.Request, response: web.StreamResponse) -> None:
    if response.prepared:  # a WebSocket or a stream: its headers went out already
        return
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    # Join links carry their token in the query: never pass a URL on to another site.
    headers.setdefault("Referrer-Policy", "no-referrer")
    if request.secure:
        headers.setdefault("Strict-Transport-Security", HSTS)
    if (response.content_type or "").startswith("text/html"):
        headers.setdefault("Content-Security-Policy", PAGE_CSP)
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("Cache-Control", "no-store")  # pages may hold a join token


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # redirects and errors raised by handlers
        _secure(request, exc)
        raise
    _secure(request, response)
    return response


def redact(path_qs: str) -> str:
    """A request target with the values of secret query parameters replaced."""
    return ENCODED_SECRET.sub(r"\1[redacted]", SECRET_PARAMETER.sub(r"\1[redacted]", path_qs))


class RedactedAccessLogger(AbstractAccessLogger):
    """aiohttp's access log line, with tokens in URLs replaced by ``[redacted]``."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        # The client, also behind a trusted proxy (else every line would name the proxy).
        client = request.get(FORWARDED_FOR) or request.remote or "-"
        self.logger.info('%s "%s %s HTTP/%d.%d" %d %d %.3fs "%s"', client,
                         request.method, redact(request.path_qs), request.version.major,
                         request.version.minor, response.status, response.body_length, time,
                         request.headers.get("User-Agent", "-"))
