"""Settings for every role of the service, read from the environment (and an optional file).

Every variable starts with ``MULTIPOINT_``; ``MULTIPOINT_SETTINGS_FILE`` names an optional
dotenv-style file whose values the environment overrides. Invalid values stop start-up
with a message that names the variable (see :func:`load_settings`).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "MULTIPOINT_"


class SettingsError(Exception):
    """Raised when the settings cannot be used; the message names the variable."""


def _split_list(value: object) -> object:
    # Lists come from the environment as comma-separated text: "a,b,c".
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    data_dir: Path = Field(Path("var"), description="Where the SQLite file and the generated secret live")
    database_url: str = Field("", description="SQLAlchemy URL; empty means SQLite in data_dir")

    http_host: str = "127.0.0.1"
    http_port: int = Field(8080, ge=1, le=65535)
    public_url: str = Field("http://127.0.0.1:8080", description="Base of links given to people")

    # Media path (ICE). aioice leaves loopback out of its host candidates, so the addresses
    # the media path binds to and advertises are a setting (127.0.0.1 in tests).
    media_addresses: Annotated[list[str], NoDecode] = Field(default_factory=list)
    udp_port_min: int | None = Field(None, ge=1024, le=65535)
    udp_port_max: int | None = Field(None, ge=1024, le=65535)
    stun_servers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    turn_servers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    turn_username: str = ""
    turn_password: SecretStr = SecretStr("")

    secret_key: SecretStr = Field(SecretStr(""), description="Signs join tokens; generated if empty")
    invite_ttl_hours: float = Field(24 * 7, gt=0, le=24 * 366)
    selftest_ttl_minutes: float = Field(60, gt=0)
    max_message_bytes: int = Field(64 * 1024, ge=1024, le=4 * 1024 * 1024)

    @field_validator("media_addresses", "stun_servers", "turn_servers", mode="before")
    @classmethod
    def _lists(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("media_addresses")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            ipaddress.ip_address(address)  # raises ValueError naming the bad address
        return value

    @field_validator("stun_servers", "turn_servers")
    @classmethod
    def _ice_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("stun:", "turn:", "turns:")):
                raise ValueError(f"{url!r} is not a stun:, turn: or turns: URL")
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        if value and "://" not in value:
            raise ValueError("must be an SQLAlchemy URL such as sqlite:///path or postgresql://...")
        return value

    @model_validator(mode="after")
    def _port_range(self) -> Settings:
        if (self.udp_port_min is None) != (self.udp_port_max is None):
            raise ValueError("udp_port_min and udp_port_max must be set together")
        if self.udp_port_min is not None and self.udp_port_min > self.udp_port_max:  # type: ignore[operator]
            raise ValueError("udp_port_min must not exceed udp_port_max")
        return self

    # Derived values -------------------------------------------------------------------

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'multipoint.db').resolve()}"

    @property
    def udp_port_range(self) -> tuple[int, int] | None:
        if self.udp_port_min is None or self.udp_port_max is None:
            return None
        return (self.udp_port_min, self.udp_port_max)

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
            field = ".".join(str(part) for part in error["loc"]) or "settings"
            name = ENV_PREFIX + field.upper() if error["loc"] else "settings"
            problems.append(f"{name}: {error['msg']}")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(problems)) from None
