"""The multipoint command and its settings, run as a person would: as a process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse
from urllib.request import urlopen

import pytest

from signaling.tokens import verify_token
from tests.conftest import free_port


def run_cli(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "multipoint", *args], env=env, input=stdin,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MULTIPOINT_")}
    clean["MULTIPOINT_DATA_DIR"] = str(tmp_path / "data")
    return clean


def test_invite_prints_only_a_join_url_signed_with_the_kept_secret(env, tmp_path: Path) -> None:
    result = run_cli("invite", "porada-kraju", env=env)
    assert result.returncode == 0, result.stderr
    url = result.stdout.strip()
    assert result.stdout.count("\n") == 1
    parsed = urlparse(url)
    assert f"{parsed.scheme}://{parsed.netloc}" == "http://127.0.0.1:8080"
    assert parsed.path == "/call/porada-kraju"
    secret = (tmp_path / "data" / "secret.key").read_text().strip()
    grant = verify_token(secret, parse_qs(parsed.query)["token"][0])
    assert grant.room == "porada-kraju" and grant.role == "host"
    # A second run reuses the same secret: serve and invite agree.
    again = run_cli("invite", "porada-kraju", "--role", "guest", env=env)
    assert verify_token(secret, parse_qs(urlparse(again.stdout.strip()).query)["token"][0]).role == "guest"


def test_invite_uses_the_public_url_setting(env) -> None:
    env["MULTIPOINT_PUBLIC_URL"] = "https://vk.example.gov.cz/"
    result = run_cli("invite", "izs-most", env=env)
    assert result.stdout.startswith("https://vk.example.gov.cz/call/izs-most?token=")


def test_invite_rejects_a_bad_room_name(env) -> None:
    result = run_cli("invite", "../etc", env=env)
    assert result.returncode == 2 and "invalid room name" in result.stderr and result.stdout == ""


@pytest.mark.parametrize(("variable", "value"), [
    ("MULTIPOINT_HTTP_PORT", "eighty"),
    ("MULTIPOINT_HTTP_PORT", "70000"),
    ("MULTIPOINT_MEDIA_ADDRESSES", "127.0.0.1,not-an-ip"),
    ("MULTIPOINT_STUN_SERVERS", "stun.example.org:3478"),
    ("MULTIPOINT_PUBLIC_URL", "ftp://x"),
    ("MULTIPOINT_UDP_PORT_MIN", "40000"),
    ("MULTIPOINT_DATABASE_URL", "just-a-path.db"),
    ("MULTIPOINT_SECRET_KEY", "short"),
    ("MULTIPOINT_VIDEO_CODEC", "vp9"),
    ("MULTIPOINT_SIP_COMPOSITE_MAX", "1024x768"),
])
def test_invalid_settings_stop_start_up_naming_the_setting(env, variable: str, value: str) -> None:
    env[variable] = value
    result = run_cli("serve", env=env)
    assert result.returncode == 2
    named = "MULTIPOINT_UDP_PORT" if variable == "MULTIPOINT_UDP_PORT_MIN" else variable
    assert named in result.stderr, result.stderr


def test_settings_file_is_read_and_environment_wins(env, tmp_path: Path) -> None:
    settings_file = tmp_path / "multipoint.env"
    settings_file.write_text("MULTIPOINT_PUBLIC_URL=https://from-file.example\n")
    env["MULTIPOINT_SETTINGS_FILE"] = str(settings_file)
    assert run_cli("invite", "a", env=env).stdout.startswith("https://from-file.example/call/a")
    env["MULTIPOINT_PUBLIC_URL"] = "https://from-env.example"
    assert run_cli("invite", "a", env=env).stdout.startswith("https://from-env.example/call/a")
    env["MULTIPOINT_SETTINGS_FILE"] = str(tmp_path / "missing.env")
    result = run_cli("invite", "a", env=env)
    assert result.returncode == 2 and "MULTIPOINT_SETTINGS_FILE" in result.stderr


def test_db_upgrade_creates_the_schema(env, tmp_path: Path) -> None:
    result = run_cli("db", "upgrade", env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "data" / "multipoint.db").exists()
    assert run_cli("db", "upgrade", env=env).returncode == 0  # idempotent


def test_serve_runs_everything_with_embedded_sqlite(env, tmp_path: Path) -> None:
    port = free_port()
    env["MULTIPOINT_PUBLIC_URL"] = f"http://127.0.0.1:{port}"
    process = subprocess.Popen([sys.executable, "-m", "multipoint", "serve", "--port", str(port)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        body = None
        for _ in range(100):
            try:
                with urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                    body = response.read().decode()
                break
            except OSError:
                time.sleep(0.2)
        assert body is not None and '"status": "ok"' in body
        with urlopen(f"http://127.0.0.1:{port}/selftest", timeout=5) as response:
            assert "selftest.js" in response.read().decode()
        assert (tmp_path / "data" / "multipoint.db").exists()
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.parametrize("how", ["option", "variable"])
def test_a_named_node_is_refused_on_sqlite(env, tmp_path: Path, how: str) -> None:
    # Several nodes share one PostgreSQL database; each machine's SQLite file would not.
    args = ["serve", "--port", str(free_port())]
    if how == "option":
        args += ["--node", "brno"]
    else:
        env["MULTIPOINT_NODE"] = "brno"
    result = run_cli(*args, env=env)
    assert result.returncode == 2
    assert "MULTIPOINT_NODE" in result.stderr and "PostgreSQL" in result.stderr, result.stderr
    assert not (tmp_path / "data" / "multipoint.db").exists(), "refused before serving"


@pytest.mark.parametrize(("variable", "value"), [
    ("MULTIPOINT_NODE", "no spaces"), ("MULTIPOINT_NODE_LABELS", "izs,Not Ok"),
    ("MULTIPOINT_NODE_LEASE_SECONDS", "0"), ("MULTIPOINT_SPREAD_ROOMS", "sometimes"),
    ("MULTIPOINT_PIPE_HOST", "0.0.0.0"), ("MULTIPOINT_PIPE_HOST", "node-b.local"),
])
def test_invalid_node_settings_are_named(env, variable: str, value: str) -> None:
    env[variable] = value
    result = run_cli("serve", env=env)
    assert result.returncode == 2 and variable in result.stderr, result.stderr


def test_node_settings_are_read() -> None:
    from multipoint.settings import Settings

    plain = Settings(data_dir=Path("/nonexistent"))
    assert plain.node_name == "local" and plain.node_labels == [] \
        and plain.node_lease_seconds == 10
    plain.check_node_database()  # the single embedded node: fine on SQLite
    named = Settings(node="brno", node_labels="IZS, general",  # type: ignore[arg-type]
                     database_url="postgresql+psycopg://db.example/multipoint")
    assert named.node_name == "brno" and named.node_labels == ["izs", "general"]
    named.check_node_database()


def test_the_largest_composite_for_units_reaches_the_workers_rooms() -> None:
    from mcu.worker import room_config
    from multipoint.app import media_config
    from multipoint.settings import Settings

    settings = Settings(data_dir=Path("/nonexistent"))
    assert room_config(media_config(settings)).unit_composite_max == (1280, 720)
    settings = Settings(data_dir=Path("/nonexistent"), sip_composite_max="1920x1080")
    assert room_config(media_config(settings)).unit_composite_max == (1920, 1080)


def test_user_create_reads_the_password_from_stdin(env, tmp_path: Path) -> None:
    from sqlalchemy import select

    from scheduler.access.users import verify_password
    from scheduler.db import Database
    from scheduler.models import User

    created = run_cli("user", "create", "operator1", "--role", "operator", env=env,
                      stdin="correct horse battery\n")
    assert created.returncode == 0, created.stderr
    assert "correct horse" not in created.stdout + created.stderr
    assert run_cli("user", "create", "operator1", "--role", "operator", env=env,
                   stdin="another long password\n").returncode != 0  # the name is taken
    assert run_cli("user", "create", "short", "--role", "operator", env=env,
                   stdin="short\n").returncode != 0
    missing = run_cli("user", "create", "admin-x", "--role", "org_admin", "--organisation", "nowhere",
                      env=env, stdin="long enough password\n")
    assert missing.returncode != 0 and "nowhere" in missing.stderr
    database = Database(f"sqlite:///{tmp_path / 'data' / 'multipoint.db'}")
    with database.session() as session:
        users = session.scalars(select(User)).all()
    database.dispose()
    assert [u.name for u in users] == ["operator1"]
    assert verify_password("correct horse battery", users[0].password_hash)
    assert not verify_password("wrong horse battery", users[0].password_hash)
