"""Every setting, read from the environment in one place (DESIGN.md section 4).

Components receive a `Settings` object instead of reading `os.environ` themselves, so
tests can run several differently configured parts in one process. A TOML file named by
MSGSTATUS_CONFIG adds provider accounts (several Twilio auth tokens, several Meta apps);
docs/configuration.md describes its format.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


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


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


# Provider names as they appear in `[[providers.<name>.accounts]]` and in secret names.
_PROVIDER_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_FIELD_NAME = re.compile(r"[a-z0-9_]{1,64}")

Account = Mapping[str, str]
EVENT_LOOPS = ("uvloop", "asyncio")


def _toml_type(value: Any) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }
    return next((n for t, n in names.items() if isinstance(value, t)), type(value).__name__)


def load_accounts(path: str) -> dict[str, tuple[Account, ...]]:
    """`[[providers.<name>.accounts]]` tables of the TOML file at `path`, validated.

    Every error is a ConfigError naming the file and the offending key; secret values are
    never quoted in it.
    """
    try:
        with open(path, "rb") as handle:
            doc = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"MSGSTATUS_CONFIG={path}: cannot read it ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    unknown = sorted(set(doc) - {"providers"})
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key {unknown[0]!r} (expected [providers])")
    section = doc.get("providers", {})
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: providers must be a table, got {_toml_type(section)}")
    accounts: dict[str, tuple[Account, ...]] = {}
    for provider, table in section.items():
        where = f"providers.{provider}"
        if not _PROVIDER_NAME.fullmatch(provider):
            raise ConfigError(f"{path}: {where}: provider names are lower-case letters, digits, -")
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {where} must be a table, got {_toml_type(table)}")
        extra = sorted(set(table) - {"accounts"})
        if extra:
            raise ConfigError(f"{path}: {where}.{extra[0]} is unknown (expected accounts)")
        items = table.get("accounts", [])
        if not isinstance(items, list):
            raise ConfigError(
                f"{path}: {where}.accounts must be an array of tables ([[{where}.accounts]])"
            )
        parsed: list[Account] = []
        names: set[str] = set()
        for index, item in enumerate(items):
            here = f"{where}.accounts[{index}]"
            if not isinstance(item, dict):
                raise ConfigError(f"{path}: {here} must be a table, got {_toml_type(item)}")
            for key, value in item.items():
                if not _FIELD_NAME.fullmatch(key):
                    raise ConfigError(f"{path}: {here}.{key}: keys are lower_case_with_underscores")
                if not isinstance(value, str) or not value.strip():
                    raise ConfigError(
                        f"{path}: {here}.{key} must be a non-empty string, got {_toml_type(value)}"
                    )
            name = item.get("name")
            if name is not None:
                if name in names:
                    raise ConfigError(f"{path}: {here}.name {name!r} is used twice in {where}")
                names.add(name)
            # surrounding whitespace is never part of a secret (a pasted newline)
            parsed.append({key: value.strip() for key, value in item.items()})
        accounts[provider] = tuple(parsed)
    return accounts


def _secrets(env: Mapping[str, str]) -> dict[str, str]:
    """Every non-empty MSGSTATUS_* value, stripped, keyed without the prefix.

    An empty value means unset. A value of only whitespace is refused rather than used:
    it would enable a provider whose signing key is a space. A value that is not UTF-8
    (os.environ keeps undecodable bytes as surrogates) could never be hashed.
    """
    out: dict[str, str] = {}
    for key, value in env.items():
        if not key.startswith("MSGSTATUS_") or not value:
            continue
        stripped = value.strip()
        if not stripped:
            raise ConfigError(f"{key} is set but blank: unset it or give it a value")
        try:
            stripped.encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigError(f"{key} is not valid UTF-8") from None
        out[key[len("MSGSTATUS_") :]] = stripped
    return out


def _secret_field(name: str) -> tuple[str, str]:
    """`TWILIO_AUTH_TOKEN` -> ("twilio", "auth_token"): provider, then its account key."""
    provider, _, key = name.lower().partition("_")
    return provider, key


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
    session_timeout: float = 10.0
    # How long the worker's Faust consumer lets the broker hold a fetch that finds nothing
    # new (Faust's own value is 1500): shorter hops between the worker's stages under
    # load, a few % of a core more per idle worker (docs/benchmarks-notes.md).
    fetch_max_wait_ms: int = 20
    # Bearer token of the query API (GET /v1/messages): read only.
    api_token: str | None = None
    # Bearer token of POST /v1/events (write); never the same as the read token.
    events_token: str | None = None
    # Seconds a signed timestamp may be away from when the gateway received the request
    # (processors/providers/freshness.py); 0 turns the check off.
    replay_window: float = 300.0
    # A connection must send a complete request head within this many seconds of
    # opening or of its previous answer (also the keep-alive idle time), and the whole
    # body within http_body_timeout seconds of its head (408 otherwise).
    http_header_timeout: float = 15.0
    http_body_timeout: float = 30.0
    metrics_port: int = 6066
    app_id: str = "msgstatus"
    produce_timeout: float = 5.0
    # The gateway's event loop (processors/eventloop.py): "uvloop" or "asyncio".
    gateway_event_loop: str = "asyncio"
    log_level: str = "WARNING"
    secrets: Mapping[str, str] = field(default_factory=dict)
    # provider name -> its `[[providers.<name>.accounts]]` from the MSGSTATUS_CONFIG file
    accounts: Mapping[str, tuple[Account, ...]] = field(default_factory=dict)
    config_path: str | None = None

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def secret(self, name: str) -> str | None:
        """Provider secret `MSGSTATUS_<NAME>`, else the first account's value from the file.

        Unset or empty everywhere means the provider is off.
        """
        found = self.secrets_for(name)
        return found[0] if found else None

    def secrets_for(self, name: str) -> list[str]:
        """Every configured value of a provider secret: the environment's first, then each
        account's from the config file (`TWILIO_AUTH_TOKEN` -> `auth_token` of every
        `[[providers.twilio.accounts]]`), without repeats."""
        values: list[str] = []
        env_value = self.secrets.get(name.upper())
        if env_value:
            values.append(env_value)
        provider, key = _secret_field(name)
        for account in self.accounts.get(provider, ()):
            value = account.get(key)
            if value and value not in values:
                values.append(value)
        return values

    def provider_accounts(self, provider: str) -> tuple[Account, ...]:
        """The provider's accounts from the config file (empty without a file)."""
        return tuple(self.accounts.get(provider, ()))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        d = cls()
        backend = env.get("MSGSTATUS_STATE_BACKEND", "rocksdb")
        if backend not in ("rocksdb", "redis"):
            raise ConfigError(f"MSGSTATUS_STATE_BACKEND must be rocksdb or redis, got {backend!r}")
        if backend == "redis":  # say so rather than silently run on RocksDB
            raise ConfigError("MSGSTATUS_STATE_BACKEND=redis is not implemented yet; use rocksdb")
        config_path = env.get("MSGSTATUS_CONFIG") or None
        secrets = _secrets(env)
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
            session_timeout=_float(env, "MSGSTATUS_SESSION_TIMEOUT", d.session_timeout),
            fetch_max_wait_ms=_int(env, "MSGSTATUS_FETCH_MAX_WAIT_MS", d.fetch_max_wait_ms),
            api_token=secrets.get("API_TOKEN"),
            events_token=secrets.get("EVENTS_TOKEN"),
            replay_window=_float(env, "MSGSTATUS_REPLAY_WINDOW", d.replay_window),
            http_header_timeout=_float(env, "MSGSTATUS_HTTP_HEADER_TIMEOUT", d.http_header_timeout),
            http_body_timeout=_float(env, "MSGSTATUS_HTTP_BODY_TIMEOUT", d.http_body_timeout),
            metrics_port=_int(env, "MSGSTATUS_METRICS_PORT", d.metrics_port),
            app_id=env.get("MSGSTATUS_APP_ID", d.app_id),
            produce_timeout=_float(env, "MSGSTATUS_PRODUCE_TIMEOUT", d.produce_timeout),
            gateway_event_loop=_choice(
                env, "MSGSTATUS_GATEWAY_EVENT_LOOP", d.gateway_event_loop, EVENT_LOOPS
            ),
            log_level=env.get("MSGSTATUS_LOG_LEVEL", d.log_level).upper(),
            secrets=secrets,
            accounts=load_accounts(config_path) if config_path else {},
            config_path=config_path,
        )
        if settings.partitions < 1:
            raise ConfigError("MSGSTATUS_PARTITIONS must be at least 1")
        if settings.max_body_bytes < 1:
            raise ConfigError("MSGSTATUS_MAX_BODY_BYTES must be positive")
        if not 0 <= settings.fetch_max_wait_ms <= 10_000:
            raise ConfigError("MSGSTATUS_FETCH_MAX_WAIT_MS must be between 0 and 10000")
        if not 0 <= settings.replay_window <= 604_800:
            raise ConfigError("MSGSTATUS_REPLAY_WINDOW must be between 0 and 604800 seconds")
        for name, value in (
            ("MSGSTATUS_HTTP_HEADER_TIMEOUT", settings.http_header_timeout),
            ("MSGSTATUS_HTTP_BODY_TIMEOUT", settings.http_body_timeout),
        ):
            if not 0 < value <= 3600:
                raise ConfigError(f"{name} must be more than 0 and at most 3600 seconds")
        if settings.api_token is not None and settings.api_token == settings.events_token:
            raise ConfigError(
                "MSGSTATUS_EVENTS_TOKEN must differ from MSGSTATUS_API_TOKEN: the read token "
                "of the query API must not be able to write events"
            )
        return settings
