"""docker/compose.yaml and docker/nginx.conf: the compose file parsed (when PyYAML is
there), the proxy config checked and run by the real nginx (when /usr/sbin/nginx is
there) in front of two real `multipoint serve` processes on loopback.

Run inside a loopback-only namespace:
    unshare -n bash -c 'ip link set lo up && .venv/bin/pytest -q tests/test_docker_config.py'
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from signaling.turn import turn_credentials

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
NGINX = Path("/usr/sbin/nginx")
SHARED, NODE_A, NODE_B = "vc.example.gov.cz", "node-a.vc.example.gov.cz", "node-b.vc.example.gov.cz"


# --- compose.yaml -----------------------------------------------------------------------

def _compose() -> dict:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_compose_services_and_settings() -> None:
    services = _compose()["services"]
    assert {"postgres", "migrate", "node-a", "node-b", "coturn", "proxy"} <= set(services)
    assert "healthcheck" in services["postgres"]
    assert services["migrate"]["command"] == ["multipoint", "db", "upgrade"]
    ranges = []
    for name in ("node-a", "node-b"):
        node = services[name]
        env = node["environment"]
        assert node["network_mode"] == "host"
        assert node["command"] == ["multipoint", "serve", "--node", name]
        assert env["MULTIPOINT_TURN_SECRET"] and "turn_credentials" not in str(node)
        assert env["MULTIPOINT_PUBLIC_URL"] == f"https://{name}.vc.example.gov.cz"
        assert env["MULTIPOINT_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert node["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        ranges.append(range(int(env["MULTIPOINT_UDP_PORT_MIN"]), int(env["MULTIPOINT_UDP_PORT_MAX"]) + 1))
    assert not set(ranges[0]) & set(ranges[1]), "the nodes' UDP ranges overlap"
    assert services["node-b"]["environment"]["MULTIPOINT_NODE_LABELS"] == "izs"
    coturn = services["coturn"]["command"]
    assert "--use-auth-secret" in coturn and any(a.startswith("--static-auth-secret=") for a in coturn)
    assert "--lt-cred-mech" not in coturn
    # turns: on 443 for firewalls that let out nothing else, on an address of its own
    # (nginx has 443 of the web address).
    assert "--tls-listening-port=443" in coturn and "--listening-ip=192.0.2.11" in coturn
    urls = _compose()["x-node-environment"]["MULTIPOINT_TURN_URLS"].split(",")
    assert "turns:turn.vc.example.gov.cz:443?transport=tcp" in urls


# --- TURN credentials ---------------------------------------------------------------------

def test_turn_credentials_follow_the_turn_rest_scheme() -> None:
    username, password = turn_credentials("s3cret", "node-a", 3600, now=1_000_000)
    assert username == "1003600:node-a"
    expected = hmac.new(b"s3cret", b"1003600:node-a", hashlib.sha1).digest()
    assert base64.b64decode(password) == expected


# --- nginx.conf -------------------------------------------------------------------------

needs_nginx = pytest.mark.skipif(not NGINX.exists(), reason="nginx is not installed")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _self_signed(directory: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SHARED)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName(n) for n in (SHARED, NODE_A, NODE_B)]), critical=False)
            .sign(key, hashes.SHA256()))
    (directory / "fullchain.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "privkey.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))


def _sub(pattern: str, replacement: str, text: str, count: int) -> str:
    """Replace exactly ``count`` matches: a test copy that silently missed a line would
    test something else than docker/nginx.conf."""
    new, done = re.subn(pattern, replacement, text)
    assert done == count, f"{pattern!r}: {done} matches in docker/nginx.conf, expected {count}"
    return new


def nginx_test_copy(tmp: Path, http_port: int, https_port: int, port_a: int, port_b: int) -> Path:
    """docker/nginx.conf with the lines marked `test:` pointed at ``tmp`` and free ports."""
    text = (DOCKER / "nginx.conf").read_text()
    text = _sub(r"(?m)^user nginx;.*$", "", text, 1)
    text = _sub(r"(?m)^pid .*$", f"pid {tmp}/nginx.pid;", text, 1)
    text = _sub(r"(?m)^error_log .*$", f"error_log {tmp}/error.log warn;", text, 1)
    text = _sub(r"access_log /dev/stdout;", f"access_log {tmp}/access.log;", text, 1)
    text = _sub(r"/etc/nginx/tls/", f"{tmp}/", text, 2)
    text = _sub(r"127\.0\.0\.1:8081", f"127.0.0.1:{port_a}", text, 3)
    text = _sub(r"127\.0\.0\.1:8082", f"127.0.0.1:{port_b}", text, 3)
    text = _sub(r"listen 80 default_server;", f"listen 127.0.0.1:{http_port} default_server;", text, 1)
    text = _sub(r"listen 192\.0\.2\.10:443 ssl", f"listen 127.0.0.1:{https_port} ssl", text, 3)
    # Temporary files of a non-root nginx.
    text = _sub(r"(?m)^http \{", "http {\n" + "".join(
        f"    {kind}_temp_path {tmp}/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")), text, 1)
    _self_signed(tmp)
    path = tmp / "nginx.conf"
    path.write_text(text)
    return path


@needs_nginx
def test_nginx_config_is_valid(tmp_path: Path) -> None:
    conf = nginx_test_copy(tmp_path, 18080, 18443, 18081, 18082)
    result = subprocess.run([str(NGINX), "-t", "-c", str(conf), "-p", str(tmp_path)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def _wait_http(url: str, timeout: float, process: subprocess.Popen) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{process.args} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


def _front(tmp: Path, name: str, port: int) -> subprocess.Popen:
    """A real `multipoint serve` on SQLite (an unnamed node: a named one needs PostgreSQL),
    its media worker inline, all on loopback."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MULTIPOINT_")}
    env.update(MULTIPOINT_DATA_DIR=str(tmp / name), MULTIPOINT_MEDIA_INLINE="true",
               MULTIPOINT_MEDIA_ADDRESSES="127.0.0.1", MULTIPOINT_SCHEDULER_JOBS="false",
               MULTIPOINT_PUBLIC_URL=f"https://{name}.vc.example.gov.cz")
    log = (tmp / f"{name}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "multipoint", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[dict]:
    if not NGINX.exists():
        pytest.skip("nginx is not installed")
    http_port, https_port, port_a, port_b = (_free_port() for _ in range(4))
    conf = nginx_test_copy(tmp_path, http_port, https_port, port_a, port_b)
    started: list[subprocess.Popen] = []
    try:
        fronts = {"node-a": _front(tmp_path, "node-a", port_a),
                  "node-b": _front(tmp_path, "node-b", port_b)}
        started += fronts.values()
        for name, port in (("node-a", port_a), ("node-b", port_b)):
            _wait_http(f"http://127.0.0.1:{port}/healthz", 60, fronts[name])
        proxy = subprocess.Popen(
            [str(NGINX), "-c", str(conf), "-p", str(tmp_path), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=(tmp_path / "nginx.out").open("wb"),
            start_new_session=True)
        started.append(proxy)
        deadline = time.monotonic() + 10
        while True:
            assert proxy.poll() is None, (tmp_path / "nginx.out").read_text()
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", https_port)) == 0:
                    break
            assert time.monotonic() < deadline, "nginx did not listen within 10 s"
            time.sleep(0.1)
        yield {"url": f"https://127.0.0.1:{https_port}", "http_url": f"http://127.0.0.1:{http_port}",
               "fronts": fronts, "tmp": tmp_path}
    finally:
        for process in reversed(started):
            _stop(process)


def _tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def _healthz(http: aiohttp.ClientSession, url: str, host: str) -> int:
    async with http.get(url + "/healthz", headers={"Host": host}, ssl=_tls(),
                        timeout=aiohttp.ClientTimeout(total=10)) as response:
        return response.status


async def _ping(http: aiohttp.ClientSession, url: str, host: str) -> dict:
    async with http.ws_connect(url.replace("https:", "wss:") + "/ws", headers={"Host": host},
                               ssl=_tls(), timeout=aiohttp.ClientWSTimeout(ws_receive=10, ws_close=5)) as ws:
        await ws.send_json({"type": "ping"})
        return await ws.receive_json(timeout=10)


async def test_nginx_proxies_http_and_websocket_and_survives_a_front(proxied) -> None:
    url = proxied["url"]
    async with aiohttp.ClientSession() as http:
        # Plain HTTP only redirects to HTTPS.
        async with http.get(proxied["http_url"] + "/healthz", headers={"Host": SHARED},
                            allow_redirects=False) as response:
            assert response.status == 301
            assert response.headers["Location"] == f"https://{SHARED}/healthz"
        for host in (SHARED, NODE_A, NODE_B):
            for _ in range(4):  # the shared name takes turns between the fronts
                assert await _healthz(http, url, host) == 200, host
            assert await _ping(http, url, host) == {"type": "pong"}, host

        # node-a goes away: the shared name still answers pages and signaling (node-b),
        # node-a's own name does not, node-b's does.
        _stop(proxied["fronts"]["node-a"])
        for _ in range(6):
            assert await _healthz(http, url, SHARED) == 200
            assert await _ping(http, url, SHARED) == {"type": "pong"}
        assert await _healthz(http, url, NODE_B) == 200
        assert await _healthz(http, url, NODE_A) == 502
