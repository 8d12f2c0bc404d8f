"""Security headers on every answer, the client behind a trusted proxy, and an access log
without tokens (multipoint/http_security.py), over real HTTP."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from multipoint.http_security import (
    RedactedAccessLogger,
    forwarded_client,
    is_trusted,
    redact,
    trusted_networks,
)
from multipoint.settings import Settings, SettingsError, load_settings
from signaling.links import join_url
from tests.conftest import RunningServer, free_port
from tests.test_docker_config import _self_signed


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # 127.0.0.2 plays the reverse proxy; 127.0.0.1 is a client that connects directly.
    return load_settings(data_dir=tmp_path / "data", media_addresses=["127.0.0.1"],
                         secret_key="test-secret-" + "x" * 20, media_inline=True,
                         trusted_proxies=["127.0.0.2/32"], selftest_rate_per_ip="2/minute")


def client_from(address: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)),
                                 cookie_jar=aiohttp.CookieJar(unsafe=True))


async def test_every_answer_has_the_security_headers(server: RunningServer) -> None:
    link = join_url(server.url, server.settings.signing_secret(), "porada", ttl_s=60)
    async with aiohttp.ClientSession() as http:
        for path in (link.removeprefix(server.url), "/selftest", "/admin/sign-in"):
            async with http.get(server.url + path) as response:
                assert response.status == 200, path
                headers = response.headers
                assert headers["X-Content-Type-Options"] == "nosniff"
                assert headers["Referrer-Policy"] == "no-referrer"
                assert headers["X-Frame-Options"] == "DENY"
                assert headers["Cache-Control"] == "no-store"
                csp = headers["Content-Security-Policy"]
                assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp, path
                assert "Strict-Transport-Security" not in headers  # plain HTTP, no proxy
        # The call page runs no inline script: script-src is 'self' alone.
        async with http.get(link) as response:
            assert "script-src 'self';" in response.headers["Content-Security-Policy"]
            assert "<script>" not in await response.text()
        for path in ("/healthz", "/api/v1/openapi.json", "/static/call.js", "/api/v1/nowhere"):
            async with http.get(server.url + path) as response:
                assert response.headers["X-Content-Type-Options"] == "nosniff", path
                assert response.headers["Referrer-Policy"] == "no-referrer", path
        async with http.get(server.url + "/admin", allow_redirects=False) as response:
            assert response.status in (302, 303)  # a raised redirect gets them too
            assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_a_trusted_proxy_tells_the_client_and_the_scheme(server: RunningServer) -> None:
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.7"}
    async with client_from("127.0.0.2") as proxy:
        async with proxy.get(server.url + "/admin/sign-in", headers=forwarded) as response:
            assert response.headers["Strict-Transport-Security"].startswith("max-age=")
            assert "Secure" in response.headers["Set-Cookie"]
        # Per-address limits count the client the proxy names, not the proxy.
        statuses = []
        for client in ("198.51.100.7", "198.51.100.7", "198.51.100.7", "198.51.100.8"):
            async with proxy.get(server.url + "/selftest",
                                 headers={"X-Forwarded-For": client}) as response:
                statuses.append(response.status)
        assert statuses == [200, 200, 429, 200]
    # The same headers from a client that is not a proxy change nothing.
    async with client_from("127.0.0.1") as client, \
            client.get(server.url + "/admin/sign-in", headers=forwarded) as response:
        assert "Strict-Transport-Security" not in response.headers
        assert "Secure" not in response.headers["Set-Cookie"]


def test_the_forwarded_client_is_the_nearest_untrusted_hop() -> None:
    proxies = trusted_networks(["10.0.0.0/8", "127.0.0.2"])
    assert forwarded_client("203.0.113.5", proxies) == "203.0.113.5"
    # A client cannot choose its address by writing the header itself: the proxy appends.
    assert forwarded_client("1.2.3.4, 203.0.113.5, 10.1.1.1", proxies) == "203.0.113.5"
    assert forwarded_client("not-an-address", proxies) is None
    assert forwarded_client("", proxies) is None
    # A dual-stack listener (MULTIPOINT_HTTP_HOST=::) sees an IPv4 proxy as ::ffff:a.b.c.d.
    assert is_trusted("::ffff:127.0.0.2", proxies) and not is_trusted("::ffff:127.0.0.3", proxies)
    with pytest.raises(SettingsError, match="MULTIPOINT_TRUSTED_PROXIES"):
        load_settings(trusted_proxies=["proxy.example"])


def test_tokens_never_reach_the_access_log(caplog: pytest.LogCaptureFixture) -> None:
    link = "/call/porada?token=eyJhbGciOi.secret.part&lang=cs"
    assert redact(link) == "/call/porada?token=[redacted]&lang=cs"
    assert redact("/selftest?lang=cs&TOKEN=abc;x=1") == "/selftest?lang=cs&TOKEN=[redacted];x=1"
    assert redact("/api/v1/bookings?limit=5") == "/api/v1/bookings?limit=5"
    # A link inside another parameter, URL-encoded, loses its token too.
    assert redact("/admin/sign-in?next=%2Fcall%2Fporada%3Ftoken%3Dabc.def%26lang%3Dcs&x=1") \
        == "/admin/sign-in?next=%2Fcall%2Fporada%3Ftoken%3D[redacted]%26lang%3Dcs&x=1"
    logger = logging.getLogger("test.access")
    access_log = RedactedAccessLogger(logger, "")
    request = make_mocked_request("GET", link, headers={"User-Agent": "Chromium"})
    with caplog.at_level(logging.INFO, logger="test.access"):
        access_log.log(request, web.Response(text="ok"), 0.01)
    assert "token=[redacted]" in caplog.text and "secret.part" not in caplog.text
    assert '"GET /call/porada?token=[redacted]&lang=cs HTTP/1.1" 200' in caplog.text


async def test_serve_logs_no_token(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # The app as `serve` runs it, with its access logger, on a real port.
    from multipoint.app import create_app

    port = free_port()
    settings = load_settings(data_dir=tmp_path / "data", media_addresses=["127.0.0.1"],
                             secret_key="test-secret-" + "x" * 20, media_inline=True,
                             public_url=f"http://127.0.0.1:{port}")
    runner = web.AppRunner(create_app(settings), access_log_class=RedactedAccessLogger)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        link = join_url(settings.public_url, settings.signing_secret(), "porada", ttl_s=60)
        token = link.split("token=")[1]
        with caplog.at_level(logging.INFO, logger="aiohttp.access"):
            async with aiohttp.ClientSession() as http, http.get(link) as response:
                assert response.status == 200
        assert "/call/porada?token=[redacted]" in caplog.text
        assert token not in caplog.text
    finally:
        await runner.cleanup()


async def test_the_access_log_names_the_client_behind_a_trusted_proxy(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from multipoint.app import create_app

    port = free_port()
    settings = load_settings(data_dir=tmp_path / "data", media_addresses=["127.0.0.1"],
                             secret_key="test-secret-" + "x" * 20, media_inline=True,
                             trusted_proxies=["127.0.0.2/32"])
    runner = web.AppRunner(create_app(settings), access_log_class=RedactedAccessLogger)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        with caplog.at_level(logging.INFO, logger="aiohttp.access"):
            async with client_from("127.0.0.2") as proxy, proxy.get(
                    f"http://127.0.0.1:{port}/healthz",
                    headers={"X-Forwarded-For": "198.51.100.7"}) as response:
                assert response.status == 200
            # Not a proxy: what it claims is not logged as its address.
            async with client_from("127.0.0.1") as client, client.get(
                    f"http://127.0.0.1:{port}/healthz",
                    headers={"X-Forwarded-For": "198.51.100.8"}) as response:
                assert response.status == 200
    finally:
        await runner.cleanup()
    lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert [line.split(" ", 1)[0] for line in lines] == ["198.51.100.7", "127.0.0.1"]


async def test_direct_tls_brings_hsts_and_secure_cookies(tmp_path: Path) -> None:
    # No proxy at all: the front itself speaks TLS.
    from multipoint.app import create_app

    _self_signed(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(tmp_path / "fullchain.pem", tmp_path / "privkey.pem")
    port = free_port()
    settings = load_settings(data_dir=tmp_path / "data", media_addresses=["127.0.0.1"],
                             secret_key="test-secret-" + "x" * 20, media_inline=True)
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=tls).start()
    try:
        async with aiohttp.ClientSession() as http, \
                http.get(f"https://127.0.0.1:{port}/admin/sign-in", ssl=False) as response:
            assert response.status == 200
            assert response.headers["Strict-Transport-Security"].startswith("max-age=")
            assert "Secure" in response.headers["Set-Cookie"]
    finally:
        await runner.cleanup()


async def test_an_ipv6_client_counts_as_its_64(server: RunningServer) -> None:
    # Fresh addresses of one IPv6 line (here as a trusted proxy names them) share one
    # per-address limit (self-test pages: 2 a minute in these settings).
    statuses = []
    async with client_from("127.0.0.2") as proxy:
        for client in ("2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::3",
                       "2001:db8:1:3::1"):
            async with proxy.get(server.url + "/selftest",
                                 headers={"X-Forwarded-For": client}) as response:
                statuses.append(response.status)
    assert statuses == [200, 200, 429, 200]
