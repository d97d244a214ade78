"""Every HOMEWARD_ environment variable of the design brief, validated once at start."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from locator.core.errors import ConfigError

_TILE_TEMPLATE = re.compile(r"^https?://.*\{z\}.*\{x\}.*\{y\}.*$")
GATEWAY_PROTOCOLS = ("gt06", "jt808", "watch", "h02")
DEFAULT_GATEWAY_PORTS = "gt06=5023,jt808=5015,watch=5093,h02=5013"  # Traccar's ports


def parse_gateway_ports(value: str) -> dict[str, int]:
    """``gt06=5023,jt808=5015`` → {protocol: port}; a bad entry is a ValueError saying which."""
    ports: dict[str, int] = {}
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        name, sep, number = item.partition("=")
        name = name.strip()
        if not sep or name not in GATEWAY_PROTOCOLS:
            raise ValueError(f"{item!r} is not <protocol>=<port> (gt06|jt808|watch|h02)")
        if name in ports:
            raise ValueError(f"{name} is given twice")
        if not number.strip().isdigit() or not 1 <= int(number) <= 65535:
            raise ValueError(f"{item!r}: the port must be 1..65535")
        ports[name] = int(number)
    if len(set(ports.values())) != len(ports):
        raise ValueError("two protocols cannot share a port")
    return ports


class Settings(BaseSettings):
    """Service configuration; field names map to HOMEWARD_<NAME>."""

    model_config = SettingsConfigDict(env_prefix="HOMEWARD_", extra="ignore", frozen=True)

    redis_url: str | None = None
    # REDIS_URL names any node of a Redis Cluster; every multi-key operation stays in a slot.
    redis_cluster: bool = False
    # Global streams and timer sets are split into this many shards (on a single Redis too);
    # every process sharing a store must use the same count (recorded in the store).
    shards: int = Field(default=16, ge=1, le=1024)
    mqtt_url: str | None = None
    # Where phones (OwnTracks) reach the broker, when that differs from mqtt_url (compose).
    mqtt_public_url: str | None = None
    data_dir: Path = Path(".homeward")
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=1, le=65535)
    public_url: str | None = None
    timezone: str = "Asia/Shanghai"
    locale: Literal["zh-CN", "en"] = "zh-CN"
    respond_sla_s: int = Field(default=180, gt=0)
    onsite_sla_s: int = Field(default=600, gt=0)
    voice_after_s: int = Field(default=90, gt=0)
    offline_after_s: int = Field(default=1200, gt=0)
    track_retention_s: int = Field(default=2_592_000, gt=0)
    # Tracks stay in Redis this long (72 h); older fixes move to ARCHIVE_URL when it is set.
    track_hot_s: int = Field(default=259_200, gt=0)
    # PostgreSQL for the cold tracks (devices/telemetry/archive.py); empty: Redis only, and
    # the Redis window is TRACK_RETENTION_S.
    archive_url: str | None = None
    # PIPL Art. 51/55: who read or changed her data is kept 3 years (devices/elders/access_log).
    access_log_retention_s: int = Field(default=94_608_000, gt=0)
    # Closed incidents keep names, places and message texts this long (180 days), then
    # only their anonymous SLA figures.
    incident_retention_s: int = Field(default=15_552_000, gt=0)
    # A drill's ladder messages (each marked 演练) also reach an announced drill's family.
    drill_notify_family: bool = False
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    token_ttl_s: int = Field(default=7_776_000, ge=60)
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    twilio_from: str | None = None
    twilio_base_url: str | None = None
    vapid_private_key: str | None = None
    vapid_subject: str | None = None
    map_tiles: str = "osm"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    mqtt_client_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    # Set: ingest processes share the uplink as $share/<group>/... (one topic level, so no
    # '/', '+' or '#'); each needs its own MQTT_CLIENT_ID. Empty: a plain subscription.
    ingest_group: str = Field(default="", pattern=r"^[A-Za-z0-9_.:-]{0,64}$")
    # Store worker threads per ingest process. Each keeps two batches in flight (one sent
    # while Redis runs the other); each bracelet's messages stay with one worker (in order).
    ingest_workers: int = Field(default=1, ge=1, le=16)
    # Derives each bracelet's and phone's MQTT password (devices/registry/mqtt_credentials.py).
    mqtt_device_secret: SecretStr | None = None
    gateway_host: str = "127.0.0.1"
    gateway_ports: str = DEFAULT_GATEWAY_PORTS
    # The gateway's MQTT client id; default homeward-gateway-<hostname> (stable per machine).
    gateway_client_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,64}$")

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = urlsplit(value)
        if parts.scheme not in {"redis", "rediss", "unix"}:
            raise ValueError("must start with redis://, rediss:// or unix://")
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError("has no host (expected redis://HOST:PORT/DB)")
        _check_port(parts)
        return value

    @field_validator("mqtt_url", "mqtt_public_url")
    @classmethod
    def _mqtt_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = urlsplit(value)
        if parts.scheme not in {"mqtt", "mqtts", "tcp"}:
            raise ValueError("must start with mqtt://, mqtts:// or tcp://")
        if parts.query and parts.query not in {"protocol=5", "protocol=3.1.1"}:
            raise ValueError("takes only ?protocol=5 or ?protocol=3.1.1")
        if not parts.hostname:
            raise ValueError("has no host (expected mqtt://HOST:PORT)")
        _check_port(parts)
        return value

    @field_validator("archive_url")
    @classmethod
    def _archive_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = urlsplit(value)
        if parts.scheme not in {"postgresql", "postgres"}:
            raise ValueError("must start with postgresql:// (a PostgreSQL connection URL)")
        _check_port(parts)
        return value

    @field_validator("public_url", "twilio_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        _check_port(parts)
        return value.rstrip("/")

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (expected e.g. Asia/Shanghai)") from exc
        return value

    @field_validator("twilio_from")
    @classmethod
    def _twilio_from(cls, value: str | None) -> str | None:
        if value and not re.fullmatch(r"\+[1-9]\d{6,14}", value):
            raise ValueError("must be an E.164 phone number such as +8613800138000")
        return value or None

    @field_validator("gateway_ports")
    @classmethod
    def _gateway_ports(cls, value: str) -> str:
        parse_gateway_ports(value)
        return value

    @property
    def gateway_port_map(self) -> dict[str, int]:
        """The gateway's listening port per protocol (only the protocols listed)."""
        return parse_gateway_ports(self.gateway_ports)

    @field_validator("map_tiles")
    @classmethod
    def _map_tiles(cls, value: str) -> str:
        if value in {"osm", "amap"} or _TILE_TEMPLATE.match(value):
            return value
        raise ValueError("must be osm, amap, or a URL template with {z}, {x} and {y}")

    @property
    def zone(self) -> ZoneInfo:
        """The local time zone for schedules and reports."""
        return ZoneInfo(self.timezone)


def _check_port(parts: object) -> None:
    try:
        _ = parts.port  # type: ignore[attr-defined]  # urlsplit raises only when .port is read
    except ValueError as exc:
        raise ValueError(f"has a bad port ({exc})") from exc


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment, turning any error into one ConfigError line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"bad setting HOMEWARD_{field.upper()}: {message}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once)."""
    return load_settings()
