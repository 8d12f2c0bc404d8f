"""An office whose firewall lets out only TLS on 443: the page's media goes through TURN.

coturn (Debian's package) runs in the test's namespace with ``use-auth-secret`` and TLS
on port 443, the server hands each join TURN credentials of its own, and a Chromium
page that may use relayed candidates only (``relay=1``) is in a call with two others.
Chromium checks the TURN server's certificate: the test's own CA-less certificate is
trusted in an NSS database of the test's own (a HOME of its own for that browser).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from playwright.async_api import async_playwright

from signaling.links import join_url
from signaling.tokens import JoinGrant, issue_token
from tests.browser.conftest import CHROMIUM, CHROMIUM_FLAGS
from tests.conftest import RunningServer, start_process_server
from tests.peers import ClientPeer, ColourTrack, ToneTrack, wait_until
from tests.signal_client import SignalClient

pytestmark = pytest.mark.browser

SECRET = "turn-shared-secret-for-the-test"
ROOM = "porada-za-firewallem"

# The page's selected pair: its local candidate's type and, for a relay, how it
# reaches the TURN server; and what it receives.
SELECTED = """
async () => {
  const pc = window.multipointCall.session?.pc;
  if (!pc) return null;
  const stats = await pc.getStats();
  let pair = null, frames = 0, packets = 0;
  stats.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
    if (s.type === 'inbound-rtp' && s.kind === 'video') frames += s.framesDecoded || 0;
    if (s.type === 'inbound-rtp' && s.kind === 'audio') packets += s.packetsReceived || 0;
  });
  const local = pair ? stats.get(pair.localCandidateId) : null;
  return {type: local?.candidateType ?? null, relayProtocol: local?.relayProtocol ?? null,
          frames, packets, state: pc.connectionState};
}
"""


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "turn.pem", directory / "turn.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class Coturn:
    """coturn with TLS on 443 (plain TURN off), which a test can stop and start again;
    ``home``: a HOME whose NSS database trusts its certificate."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.cert, self.key = self_signed(directory)
        self.home = directory / "home"
        nssdb = self.home / ".pki" / "nssdb"
        nssdb.mkdir(parents=True)
        subprocess.run(["certutil", "-d", f"sql:{nssdb}", "-N", "--empty-password"], check=True)
        subprocess.run(["certutil", "-d", f"sql:{nssdb}", "-A", "-t", "CP,,", "-n", "turn",
                        "-i", str(self.cert)], check=True)
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        log = (self.directory / "coturn.log").open("ab")
        self.process = subprocess.Popen(
            ["turnserver", "-n", "--use-auth-secret", f"--static-auth-secret={SECRET}",
             "--realm=multipoint.test", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1",
             "--tls-listening-port=443", "--no-udp", "--no-tcp", "--no-dtls",
             f"--cert={self.cert}", f"--pkey={self.key}", "--allow-loopback-peers", "--no-cli",
             "--min-port=49160", "--max-port=49260", "--log-file=stdout", "--simple-log"],
            stdout=log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[Coturn]:
    for tool in ("turnserver", "certutil"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: apt-get install -y coturn libnss3-tools")
    server = Coturn(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def turn_server(tmp_path: Path, coturn: Path) -> AsyncIterator[RunningServer]:
    server = await start_process_server(tmp_path, 1, turn_secret=SECRET,
                                        turn_urls=["turns:localhost:443?transport=tcp"])
    try:
        yield server
    finally:
        await server.runner.cleanup()


async def test_a_relay_only_page_calls_through_turn_over_tls_on_443(turn_server, coturn) -> None:
    server = turn_server
    secret = server.settings.signing_secret()
    others = []
    for index, colour in enumerate([(200, 40, 40), (40, 40, 200)]):
        client = await SignalClient.connect(server.ws_url)
        peer = ClientPeer(audio=ToneTrack(300 + 200 * index), video=ColourTrack(colour))
        token = issue_token(secret, JoinGrant(room=ROOM, role="guest"), 600)
        joined = await client.join_with(peer, token, name=f"ORP {index}")
        # Every join gets TURN credentials of its own, in the TURN REST scheme.
        (ice,) = joined["ice_servers"]
        assert ice["urls"] == ["turns:localhost:443?transport=tcp"]
        assert ice["username"].endswith(":" + joined["participant"]) and ice["credential"]
        others.append(client)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_FLAGS, env={"HOME": str(coturn.home)})
        try:
            context = await browser.new_context(base_url=server.url)
            await context.grant_permissions(["camera", "microphone"], origin=server.url)
            page = await context.new_page()
            link = join_url(server.url, secret, ROOM, role="guest", name="Úřad za firewallem",
                            ttl_s=600)
            await page.goto(link + "&autojoin=1&relay=1")

            async def flowing() -> dict | None:
                before = await page.evaluate(SELECTED)
                await asyncio.sleep(0.5)
                after = await page.evaluate(SELECTED)
                if before and after and after["frames"] > before["frames"] \
                        and after["packets"] > before["packets"]:
                    return after
                return None

            seen = None
            for _ in range(60):
                seen = await flowing()
                if seen:
                    break
            assert seen is not None, await page.evaluate(SELECTED)
            # Through coturn over TLS, the only way this page was allowed.
            assert seen["type"] == "relay" and seen["relayProtocol"] == "tls"
            # And the others receive the page's camera and microphone.
            me = await page.evaluate("window.multipointCall.me")
            assert await wait_until(lambda: all(
                c.live_frames("video").get(me, 0) > 10 and c.live_frames("audio").get(me, 0) > 10
                for c in others), timeout=30)
        finally:
            await browser.close()
            for client in others:
                await client.close()


async def test_an_ice_restart_after_the_turn_credentials_expired_gets_fresh_ones(
        tmp_path: Path, coturn: Coturn) -> None:
    """A relay-only page in a call longer than its TURN credentials' life (a standing
    bridge's page open for days; here 18 s) loses its relay (coturn restarted). Its ICE
    restart used to gather with the join's expired credentials: coturn refused them, the
    restart could not succeed, and only the page's new join 25 s later brought it back
    (a new participant). The restart now gets fresh credentials and succeeds in place."""
    server = await start_process_server(tmp_path, 1, turn_secret=SECRET,
                                        turn_urls=["turns:localhost:443?transport=tcp"],
                                        turn_credential_hours=0.005)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_FLAGS, env={"HOME": str(coturn.home)})
        try:
            context = await browser.new_context(base_url=server.url)
            await context.grant_permissions(["camera", "microphone"], origin=server.url)
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            link = join_url(server.url, server.settings.signing_secret(), ROOM, role="guest",
                            name="Operační středisko", ttl_s=600)
            await page.goto(link + "&autojoin=1&relay=1")
            connected = "() => ['connected', 'completed'].includes(" \
                        "window.multipointCall.session?.pc?.iceConnectionState)"
            await page.wait_for_function(connected, timeout=30_000)
            assert (await page.evaluate(SELECTED))["type"] == "relay"
            me = await page.evaluate("window.multipointCall.me")
            username = await page.evaluate(
                "window.multipointCall.session.pc.getConfiguration().iceServers[0].username")
            expiry = int(username.split(":")[0])
            await asyncio.sleep(max(0.0, expiry - time.time()) + 2)  # the credentials expired

            coturn.stop()  # the relay goes: the page's ICE fails and it restarts ICE
            await page.wait_for_function(f"!({connected})()", timeout=30_000)
            coturn.start()
            await page.wait_for_function(connected, timeout=20_000)
            assert await page.evaluate("window.multipointCall.me") == me  # in place, no new join
            assert await page.evaluate("window.multipointCall.session.recoveries") >= 1
            assert (await page.evaluate(SELECTED))["type"] == "relay"
            assert errors == []
        finally:
            await browser.close()
            await server.runner.cleanup()
