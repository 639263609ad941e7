"""Every setting, read from the environment in one place (DESIGN.md section 4).

Components receive a `Settings` object instead of reading `os.environ` themselves, so
tests can run several differently configured parts in one process.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field


class ConfigError(ValueError):
    """A setting has a value we cannot use; the message names the variable."""


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


@dataclass(frozen=True, slots=True)
class Settings:
    kafka_bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = ""
    partitions: int = 4
    redis_url: str = "redis://127.0.0.1:6379/0"
    state_backend: str = "rocksdb"
    data_dir: str = "./var"
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    public_url: str | None = None
    max_body_bytes: int = 1_048_576
    delivery_unknown_after: float = 3600.0
    delivery_unknown_disabled: frozenset[str] = frozenset()
    catchup_lag: float = 120.0
    session_timeout: float = 10.0
    api_token: str | None = None
    metrics_port: int = 6066
    app_id: str = "msgstatus"
    produce_timeout: float = 5.0
    log_level: str = "WARNING"
    secrets: Mapping[str, str] = field(default_factory=dict)

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def secret(self, name: str) -> str | None:
        """Provider secret `MSGSTATUS_<NAME>`; unset or empty means the provider is off."""
        value = self.secrets.get(name.upper())
        return value or None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        d = cls()
        backend = env.get("MSGSTATUS_STATE_BACKEND", "rocksdb")
        if backend not in ("rocksdb", "redis"):
            raise ConfigError(f"MSGSTATUS_STATE_BACKEND must be rocksdb or redis, got {backend!r}")
        secrets = {
            key[len("MSGSTATUS_") :]: value
            for key, value in env.items()
            if key.startswith("MSGSTATUS_") and value
        }
        settings = cls(
            kafka_bootstrap=env.get("MSGSTATUS_KAFKA_BOOTSTRAP", d.kafka_bootstrap),
            topic_prefix=env.get("MSGSTATUS_TOPIC_PREFIX", ""),
            partitions=_int(env, "MSGSTATUS_PARTITIONS", d.partitions),
            redis_url=env.get("MSGSTATUS_REDIS_URL", d.redis_url),
            state_backend=backend,
            data_dir=env.get("MSGSTATUS_DATA_DIR", d.data_dir),
            http_host=env.get("MSGSTATUS_HTTP_HOST", d.http_host),
            http_port=_int(env, "MSGSTATUS_HTTP_PORT", d.http_port),
            public_url=env.get("MSGSTATUS_PUBLIC_URL") or None,
            max_body_bytes=_int(env, "MSGSTATUS_MAX_BODY_BYTES", d.max_body_bytes),
            delivery_unknown_after=_float(
                env, "MSGSTATUS_DELIVERY_UNKNOWN_AFTER", d.delivery_unknown_after
            ),
            delivery_unknown_disabled=frozenset(
                part.strip()
                for part in env.get("MSGSTATUS_DELIVERY_UNKNOWN_DISABLED", "").split(",")
                if part.strip()
            ),
            catchup_lag=_float(env, "MSGSTATUS_CATCHUP_LAG", d.catchup_lag),
            session_timeout=_float(env, "MSGSTATUS_SESSION_TIMEOUT", d.session_timeout),
            api_token=env.get("MSGSTATUS_API_TOKEN") or None,
            metrics_port=_int(env, "MSGSTATUS_METRICS_PORT", d.metrics_port),
            app_id=env.get("MSGSTATUS_APP_ID", d.app_id),
            produce_timeout=_float(env, "MSGSTATUS_PRODUCE_TIMEOUT", d.produce_timeout),
            log_level=env.get("MSGSTATUS_LOG_LEVEL", d.log_level).upper(),
            secrets=secrets,
        )
        if settings.partitions < 1:
            raise ConfigError("MSGSTATUS_PARTITIONS must be at least 1")
        if settings.max_body_bytes < 1:
            raise ConfigError("MSGSTATUS_MAX_BODY_BYTES must be positive")
        return settings
