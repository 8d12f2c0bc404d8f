"""Settings for every role of the service, read from the environment (and an optional file).

Every variable starts with ``MULTIPOINT_``; ``MULTIPOINT_SETTINGS_FILE`` names an optional
dotenv-style file whose values the environment overrides. Invalid values stop start-up
with a message that names the variable (see :func:`load_settings`).
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from signaling.rate_limits import parse_rule

if TYPE_CHECKING:
    from scheduler.config import SchedulerConfig

ENV_PREFIX = "MULTIPOINT_"


class SettingsError(Exception):
    """Raised when the settings cannot be used; the message names the variable."""


def _base_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value.rstrip("/")


def _split_list(value: object) -> object:
    # Lists come from the environment as comma-separated text: "a,b,c".
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    # Where the SQLite file and the generated secret live.
    data_dir: Path = Path("var")
    database_url: str = ""  # SQLAlchemy URL; empty means SQLite in data_dir

    http_host: str = "127.0.0.1"
    http_port: int = Field(8080, ge=1, le=65535)
    public_url: str = "http://127.0.0.1:8080"  # base of the links given to people
    # Reverse proxies (addresses or CIDR networks) whose X-Forwarded-For and
    # X-Forwarded-Proto are believed (multipoint/http_security.py); none by default.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Media path (ICE). aioice leaves loopback out of its host candidates, so the addresses
    # the media path binds to and advertises are a setting (127.0.0.1 in tests).
    media_addresses: Annotated[list[str], NoDecode] = Field(default_factory=list)
    udp_port_min: int | None = Field(None, ge=1024, le=65535)
    udp_port_max: int | None = Field(None, ge=1024, le=65535)
    stun_servers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    turn_servers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    turn_username: str = ""
    turn_password: SecretStr = SecretStr("")
    # TURN for the participants' pages (signaling/turn.py): coturn's static-auth-secret
    # and the URLs the pages use; each join gets credentials of its own, valid this long.
    # With the secret set and no turn_username, the media path's own TURN credentials
    # (turn_servers) are derived from it at start as well.
    turn_secret: SecretStr = SecretStr("")
    turn_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    turn_credential_hours: float = Field(24, gt=0, le=24 * 366)

    # Media workers: one process per core (0 = every core of the machine). Inline runs
    # one worker inside the front process instead (debugging; tests that inspect media).
    workers: int = Field(0, ge=0, le=256)
    media_inline: bool = False
    # This node's name among several sharing one PostgreSQL database (docs/workers.md,
    # "Nodes"); empty: the single embedded node "local". Its labels steer placement
    # ("izs": IZS rooms go there; "izs" without "general": nothing else does).
    node: str = Field("", pattern=r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,99})?$")
    node_labels: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # The protected IZS network, where the node has addresses of its own: the front also
    # listens there (same port), the media path binds and advertises those addresses
    # too, and the links of IZS rooms (standing bridges, IZS bookings) point there.
    izs_http_host: str = ""
    izs_public_url: str = ""
    izs_media_addresses: Annotated[list[str], NoDecode] = Field(default_factory=list)
    node_lease_seconds: float = Field(10, ge=1, le=600)
    # Several nodes: how often a node re-reads which of its rooms were closed or moved
    # by another node, besides the PostgreSQL notices (scheduler/media/room_signals.py).
    room_resync_seconds: float = Field(30, ge=1, le=3600)
    # Rooms across nodes (docs/workers.md): a participant whose room lives on another
    # node joins it on this node's workers instead of being sent there "always", only
    # "when_full" (the room's worker is full), or "never" (every room on one node).
    spread_rooms: Literal["never", "when_full", "always"] = "when_full"
    # Where this node's workers' pipes listen: other nodes pipe a spread room's tracks
    # there, so on several nodes it is an address of the operator's network they reach.
    pipe_host: str = "127.0.0.1"
    # SIP for room units (docs/sip.md): UDP and TCP on this port of sip_host (empty: the
    # HTTP host); 0 picks a free port (tests), and sip_enabled=false turns SIP off. The
    # units' RTP goes to the first media address (or the SIP host when none is set).
    sip_enabled: bool = True
    sip_host: str = ""
    sip_port: int = Field(5060, ge=0, le=65535)
    # SIP over TLS, when a certificate (PEM, with its key) is configured; units we call
    # over TLS are checked against sip_tls_cafile (else the system's CAs).
    sip_tls_port: int = Field(5061, ge=0, le=65535)
    sip_tls_certificate: str = ""
    sip_tls_key: str = ""
    sip_tls_cafile: str = ""
    # The largest composite a room unit receives, whatever its SDP allows: each size
    # units receive is one more H.264 encode a frame, and above 640x360 a compose at that
    # size too (docs/sip.md "The composite's size for a unit": 720p is about 13 % of a core
    # more per room than 360p; 1080p about twice that).
    sip_composite_max: Literal["1920x1080", "1280x720", "960x540", "640x360", "320x180"] = "1280x720"

    secret_key: SecretStr = SecretStr("")  # signs join tokens; generated and kept if empty
    invite_ttl_hours: float = Field(24 * 7, gt=0, le=24 * 366)
    selftest_ttl_minutes: float = Field(60, gt=0)
    max_message_bytes: int = Field(64 * 1024, ge=1024, le=4 * 1024 * 1024)
    # Joins that hold media ports but have not connected yet (docs/protocol.md): each
    # must answer and connect within the deadline, and a client IP (the socket's peer)
    # and this front as a whole may only have so many of them at a time.
    answer_timeout_seconds: float = Field(20, gt=0, le=600)
    max_pending_joins_per_ip: int = Field(30, ge=1, le=100_000)
    max_pending_joins: int = Field(300, ge=1, le=1_000_000)
    # Each signaling connection's outgoing messages wait in a queue of this many; a
    # client whose queue fills, or that takes longer than the deadline to take one
    # message, is dropped (it stopped reading) instead of holding up its room.
    send_queue_messages: int = Field(256, ge=8, le=100_000)
    send_timeout_seconds: float = Field(10, gt=0, le=600)
    # How often one client may do things (docs/protocol.md, "Rate limits"), as rates of
    # the ``limits`` library ("20/second; 600/minute"): joins per client IP and per
    # link, signaling messages per connection, self-test pages and results per client IP
    # and per self-test link.
    join_rate_per_ip: str = "120/minute"
    join_rate_per_link: str = "600/minute"
    message_rate: str = "20/second; 600/minute"
    selftest_rate_per_ip: str = "30/minute"
    selftest_rate_per_link: str = "6/minute"
    # A participant whose signaling socket is lost stays in its room this long, for its
    # page to come back on a new socket and restart ICE (docs/protocol.md, "Coming
    # back"); 0 makes a lost socket a leave.
    resume_grace_seconds: float = Field(30, ge=0, le=600)
    # The video codec rooms forward (docs/codecs.md): "vp8", "h264" (constrained
    # baseline), or "auto": each room takes its first participant's preference.
    video_codec: Literal["auto", "vp8", "h264"] = "auto"

    # Scheduler (docs/scheduler.md). Unit costs are in millicores of a media worker per
    # participant; the defaults come from the measurements in docs/scheduler.md.
    scheduler_unit_cost_hd: int = Field(11, ge=1, le=100_000)
    scheduler_unit_cost_sd: int = Field(6, ge=1, le=100_000)
    scheduler_unit_cost_audio: int = Field(2, ge=1, le=100_000)
    scheduler_unit_cost_mixed: int = Field(4, ge=1, le=100_000)
    # Once per room with mixed participants, on each worker that mixes it (its composite).
    scheduler_unit_cost_mixed_room: int = Field(400, ge=0, le=100_000)
    scheduler_worker_capacity_units: int = Field(800, ge=1, le=1_000_000)
    scheduler_izs_reserve_percent: int = Field(20, ge=0, le=90)
    scheduler_borrow_lead_hours: float = Field(48, ge=0, le=24 * 366)
    scheduler_room_open_lead_minutes: float = Field(10, ge=0, le=24 * 60)
    scheduler_room_close_grace_minutes: float = Field(15, ge=0, le=24 * 60)
    scheduler_reminder_lead_minutes: float = Field(60, ge=0, le=7 * 24 * 60)
    scheduler_max_occurrences: int = Field(400, ge=1, le=5000)
    scheduler_jobs: bool = Field(True, description="run the room/reminder jobs in this process")
    smtp_host: str = Field("", description="empty: e-mails wait in the outbox")
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_sender: str = "multipoint@localhost"
    smtp_username: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_starttls: bool = False

    @field_validator("join_rate_per_ip", "join_rate_per_link", "message_rate",
                     "selftest_rate_per_ip", "selftest_rate_per_link")
    @classmethod
    def _rates(cls, value: str) -> str:
        parse_rule(value)  # refused at start, not at the first join
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, value: list[str]) -> list[str]:
        for proxy in value:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(f"{proxy!r} is not an address or a network") from None
        return value

    @field_validator("smtp_sender")
    @classmethod
    def _smtp_sender(cls, value: str) -> str:
        if "@" not in value:
            raise ValueError("must be an e-mail address")
        return value

    @field_validator("media_addresses", "stun_servers", "turn_servers", "node_labels",
                     "izs_media_addresses", "turn_urls", "trusted_proxies", mode="before")
    @classmethod
    def _lists(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("node_labels")
    @classmethod
    def _node_labels(cls, value: list[str]) -> list[str]:
        labels = [label.lower() for label in value]
        for label in labels:
            if not re.match(r"^[a-z0-9][a-z0-9_-]{0,39}$", label):
                raise ValueError(f"{label!r} is not a label (a-z, digits, '-', '_')")
        return labels

    @field_validator("media_addresses", "izs_media_addresses")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            ipaddress.ip_address(address)  # raises ValueError naming the bad address
        return value

    @field_validator("pipe_host")
    @classmethod
    def _pipe_host(cls, value: str) -> str:
        address = ipaddress.ip_address(value)  # raises ValueError naming the bad address
        if address.is_unspecified:
            raise ValueError(f"{value} is not an address another node can send to: "
                             "name the address of this machine on the operator's network")
        return value

    @field_validator("stun_servers", "turn_servers")
    @classmethod
    def _ice_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("stun:", "turn:", "turns:")):
                raise ValueError(f"{url!r} is not a stun:, turn: or turns: URL")
        return value

    @field_validator("izs_public_url")
    @classmethod
    def _izs_public_url(cls, value: str) -> str:
        return _base_url(value) if value else value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        return _base_url(value)

    @field_validator("secret_key")
    @classmethod
    def _secret_key(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value() and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters (or empty to generate one)")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        if value and "://" not in value:
            raise ValueError("must be an SQLAlchemy URL such as sqlite:///path or postgresql://...")
        return value

    @model_validator(mode="after")
    def _port_range(self) -> Settings:
        if (self.udp_port_min is None) != (self.udp_port_max is None):
            raise ValueError(f"{ENV_PREFIX}UDP_PORT_MIN and {ENV_PREFIX}UDP_PORT_MAX must be set together")
        if self.udp_port_min is not None and self.udp_port_min > self.udp_port_max:  # type: ignore[operator]
            raise ValueError(f"{ENV_PREFIX}UDP_PORT_MIN must not exceed {ENV_PREFIX}UDP_PORT_MAX")
        return self

    # Derived values -------------------------------------------------------------------

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'multipoint.db').resolve()}"

    @property
    def node_name(self) -> str:
        """The name this node registers under: the single embedded node is "local"."""
        return self.node or "local"

    def check_node_database(self) -> None:
        """Several named nodes need one shared PostgreSQL database: refuse SQLite.

        Each machine's SQLite file would be a database of its own, so the nodes would
        not see one another's leases and rooms (and SQLite has no row locks to share).
        """
        if self.node and not self.effective_database_url.startswith("postgresql"):
            raise SettingsError(
                f"{ENV_PREFIX}NODE: the named node {self.node!r} needs a PostgreSQL database "
                f"shared by every node ({ENV_PREFIX}DATABASE_URL=postgresql+psycopg://...); "
                "leave the node unnamed to serve alone on the embedded SQLite")

    @property
    def all_media_addresses(self) -> list[str]:
        """Where the media path binds and what it advertises: the public addresses and
        those on the protected IZS network (empty: every interface but loopback)."""
        extra = [a for a in self.izs_media_addresses if a not in self.media_addresses]
        return self.media_addresses + extra if self.media_addresses else list(extra)

    @property
    def effective_sip_host(self) -> str:
        return self.sip_host or self.http_host

    @property
    def unit_media_host(self) -> str:
        """Where room units send their RTP: an address the media path advertises."""
        return self.all_media_addresses[0] if self.all_media_addresses else self.effective_sip_host

    @property
    def listen_hosts(self) -> list[str]:
        return [self.http_host] + ([self.izs_http_host] if self.izs_http_host else [])

    def link_base(self, izs: bool) -> str:
        """The base of join links: an IZS room's points at the protected network."""
        return self.izs_public_url if izs and self.izs_public_url else self.public_url

    @property
    def worker_count(self) -> int:
        if self.media_inline:
            return 1
        return self.workers or os.cpu_count() or 1

    @property
    def udp_port_range(self) -> tuple[int, int] | None:
        if self.udp_port_min is None or self.udp_port_max is None:
            return None
        return (self.udp_port_min, self.udp_port_max)

    def scheduler_config(self) -> SchedulerConfig:
        """The scheduler's settings as the plain object scheduler/ takes."""
        from datetime import timedelta

        from scheduler.booking.recurrence import Limits
        from scheduler.booking.units import UnitCosts
        from scheduler.config import SchedulerConfig, SmtpConfig

        return SchedulerConfig(
            unit_costs=UnitCosts(hd=self.scheduler_unit_cost_hd, sd=self.scheduler_unit_cost_sd,
                                 audio=self.scheduler_unit_cost_audio,
                                 mixed=self.scheduler_unit_cost_mixed,
                                 mixed_room=self.scheduler_unit_cost_mixed_room),
            worker_capacity_units=self.scheduler_worker_capacity_units,
            izs_reserve_percent=self.scheduler_izs_reserve_percent,
            borrow_lead=timedelta(hours=self.scheduler_borrow_lead_hours),
            open_lead=timedelta(minutes=self.scheduler_room_open_lead_minutes),
            close_grace=timedelta(minutes=self.scheduler_room_close_grace_minutes),
            reminder_lead=timedelta(minutes=self.scheduler_reminder_lead_minutes),
            limits=Limits(max_occurrences=self.scheduler_max_occurrences),
            smtp=SmtpConfig(host=self.smtp_host, port=self.smtp_port, sender=self.smtp_sender,
                            username=self.smtp_username,
                            password=self.smtp_password.get_secret_value(),
                            starttls=self.smtp_starttls),
        )

    def signing_secret(self) -> str:
        """The token-signing secret: the configured one, else one kept in data_dir.

        Generated on first use so that ``multipoint invite`` and ``multipoint serve``
        agree without any configuration.
        """
        configured = self.secret_key.get_secret_value()
        if configured:
            return configured
        path = self.data_dir / "secret.key"
        if path.exists():
            return path.read_text().strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(48)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secret + "\n")
        return secret


def load_settings(**overrides: object) -> Settings:
    """Read the settings; raise :class:`SettingsError` naming each bad variable."""
    settings_file = os.environ.get(ENV_PREFIX + "SETTINGS_FILE")
    if settings_file and not Path(settings_file).is_file():
        raise SettingsError(f"{ENV_PREFIX}SETTINGS_FILE: no such file {settings_file!r}")
    try:
        return Settings(_env_file=settings_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            if error["loc"]:
                field = str(error["loc"][0])
                problems.append(f"{ENV_PREFIX}{field.upper()}: {error['msg']}")
            else:  # a rule across several settings names them in its message
                problems.append(error["msg"].removeprefix("Value error, "))
        raise SettingsError("invalid settings:\n  " + "\n  ".join(problems)) from None
