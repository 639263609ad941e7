"""Every setting, read from the environment in one place (DESIGN.md section 4).

Components receive a `Settings` object instead of reading `os.environ` themselves, so
tests can run several differently configured parts in one process. A TOML file named by
MSGSTATUS_CONFIG adds provider accounts (several Twilio auth tokens, several Meta apps);
docs/configuration.md describes its format.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
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
KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _upper_choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = (env.get(name) or "").strip().upper().replace("_", "-")
    if not raw:
        return default
    for choice in choices:  # SASL_SSL is spelled with "_", SCRAM-SHA-256 with "-"
        if raw == choice.replace("_", "-"):
            return choice
    raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {env.get(name)!r}")


def _readable_file(env: Mapping[str, str], name: str) -> str | None:
    """A path setting; refused at start when the file cannot be read (not at first use,
    minutes later, inside a reconnect loop)."""
    path = (env.get(name) or "").strip()
    if not path:
        return None
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"{name}={path}: cannot read it ({exc.strerror})") from None
    return path


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


MAX_DEADLINE = 7 * 86400.0  # the deadline index is exercised up to this horizon
_POLL_API_URL = re.compile(r"MSGSTATUS_([A-Z0-9_]+)_API_URL")
_POLL_RATE_LIMIT = re.compile(r"MSGSTATUS_([A-Z0-9_]+)_RATE_LIMIT")


def _provider_of(env_name: str) -> str:
    """`VONAGE_MESSAGES` -> `vonage-messages`: a provider name from its settings' prefix."""
    return env_name.lower().replace("_", "-")


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    value = _float(env, name, default)
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be positive, got {env.get(name)!r}")
    return value


def _count(env: Mapping[str, str], name: str, default: int, least: int) -> int:
    value = _int(env, name, default)
    if value < least:
        raise ConfigError(f"{name} must be at least {least}, got {env.get(name)!r}")
    return value


@dataclass(frozen=True, slots=True)
class PollerConfig:
    """`msgstatus poller` (processors/ingest/pollers/): timing, and per pollable provider
    its status API's URL (MSGSTATUS_<P>_API_URL) and rate limit (MSGSTATUS_<P>_RATE_LIMIT,
    requests per minute; unset: the provider module's own). API tokens are secrets."""

    interval: float = 15.0
    max_age: float = 72 * 3600.0
    backoff_base: float = 1.0
    backoff_max: float = 300.0
    concurrency: int = 4
    request_timeout: float = 10.0
    metrics_port: int = 6067
    api_urls: Mapping[str, str] = field(default_factory=dict)
    rate_limits: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PollerConfig:
        d = cls()
        api_urls: dict[str, str] = {}
        rate_limits: dict[str, int] = {}
        for name in list(env):
            if match := _POLL_API_URL.fullmatch(name):
                url = (env.get(name) or "").strip()
                if not url:
                    continue
                if not url.startswith(("http://", "https://")):
                    raise ConfigError(f"{name} must be an http(s) URL")
                api_urls[_provider_of(match.group(1))] = url
            elif match := _POLL_RATE_LIMIT.fullmatch(name):
                limit = _int(env, name, 0)
                if limit < 1:
                    raise ConfigError(f"{name} must be at least 1 per minute")
                rate_limits[_provider_of(match.group(1))] = limit
        return cls(
            interval=_positive(env, "MSGSTATUS_POLL_INTERVAL", d.interval),
            max_age=_positive(env, "MSGSTATUS_POLL_MAX_AGE", d.max_age),
            backoff_base=_positive(env, "MSGSTATUS_POLL_BACKOFF_BASE", d.backoff_base),
            backoff_max=_positive(env, "MSGSTATUS_POLL_BACKOFF_MAX", d.backoff_max),
            concurrency=_count(env, "MSGSTATUS_POLL_CONCURRENCY", d.concurrency, least=1),
            request_timeout=_positive(env, "MSGSTATUS_POLL_TIMEOUT", d.request_timeout),
            metrics_port=_count(env, "MSGSTATUS_POLLER_METRICS_PORT", d.metrics_port, least=0),
            api_urls=api_urls,
            rate_limits=rate_limits,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> PollerConfig:
        return settings.poller


@dataclass(frozen=True, slots=True)
class ProviderOptions:
    """Provider settings that are not credentials (docs/configuration.md)."""

    # SES via SNS: GET a verified SubscriptionConfirmation's SubscribeURL
    ses_auto_confirm: bool = True
    # a pinned SNS signing certificate (URL and PEM) instead of fetching it from SNS
    ses_signing_cert_url: str | None = None
    ses_signing_cert_pem: str | None = None
    # Vonage SMS API `sig`: md5hash, md5, sha1, sha256 or sha512
    vonage_signature_method: str = "sha256"
    # seconds a signed time may be old (None: the provider module's default)
    vonage_messages_max_age: float | None = None
    bird_max_age: float | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ProviderOptions:
        d = cls()
        return cls(
            ses_auto_confirm=_bool(env, "MSGSTATUS_SES_AUTO_CONFIRM", d.ses_auto_confirm),
            ses_signing_cert_url=(env.get("MSGSTATUS_SES_SIGNING_CERT_URL") or "").strip() or None,
            ses_signing_cert_pem=(env.get("MSGSTATUS_SES_SIGNING_CERT_PEM") or "").strip() or None,
            vonage_signature_method=_choice(
                env, "MSGSTATUS_VONAGE_SIGNATURE_METHOD", d.vonage_signature_method, SIG_METHODS
            ),
            vonage_messages_max_age=_seconds(env, "MSGSTATUS_VONAGE_MESSAGES_MAX_AGE"),
            bird_max_age=_seconds(env, "MSGSTATUS_BIRD_MAX_AGE"),
        )


SIG_METHODS = ("md5hash", "md5", "sha1", "sha256", "sha512")


def _seconds(env: Mapping[str, str], name: str) -> float | None:
    """An optional non-negative number of seconds (None when unset)."""
    if not (env.get(name) or "").strip():
        return None
    value = _float(env, name, 0.0)
    if not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"{name} must be a number of seconds, got {env.get(name)!r}")
    return value


def _ask_providers(env: Mapping[str, str], poller: PollerConfig) -> frozenset[str]:
    """MSGSTATUS_DELIVERY_UNKNOWN_ASK, else every provider whose poller is configured
    (the registry checks that each can be polled: processors/providers/__init__.py)."""
    raw = env.get("MSGSTATUS_DELIVERY_UNKNOWN_ASK")
    if raw is None:
        return frozenset(poller.api_urls)
    return frozenset(part.strip() for part in raw.split(",") if part.strip())


class _Reads(Mapping[str, str]):
    """The environment, remembering the names the typed settings read: every other
    MSGSTATUS_* value is a provider credential (Settings.secrets)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        self.read: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.read.add(name)
        return self._env[name]

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str):
            self.read.add(name)
        return name in self._env

    def __iter__(self) -> Iterator[str]:
        return iter(self._env)

    def __len__(self) -> int:
        return len(self._env)


def _check_deadlines(settings: Settings) -> None:
    after = settings.delivery_unknown_after
    if after > MAX_DEADLINE:
        raise ConfigError(
            f"MSGSTATUS_DELIVERY_UNKNOWN_AFTER must be at most {MAX_DEADLINE:.0f} s (7 days)"
        )
    for name, value in (
        ("MSGSTATUS_DELIVERY_UNKNOWN_GRACE", settings.delivery_unknown_grace),
        ("MSGSTATUS_DELIVERY_UNKNOWN_ASK_TIMEOUT", settings.delivery_unknown_ask_timeout),
    ):
        if value < 0:
            raise ConfigError(f"{name} must not be negative")
    longest = after + settings.delivery_unknown_grace + settings.delivery_unknown_ask_timeout
    if 0 < settings.state_retention < longest + 86400:
        raise ConfigError(
            "MSGSTATUS_STATE_RETENTION must exceed the delivery_unknown deadline, grace and ask "
            f"timeout by a day at least ({longest + 86400:.0f} s); 0 keeps state forever"
        )
    if 0 < settings.state_marker_retention < settings.state_retention:
        raise ConfigError(
            "MSGSTATUS_STATE_MARKER_RETENTION must not be shorter than MSGSTATUS_STATE_RETENTION"
        )


@dataclass(frozen=True, slots=True)
class Settings:
    kafka_bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = ""
    # Prefix of the raw.<provider> topics when it differs from topic_prefix (None: the
    # same). `msgstatus rebuild` runs its shadow worker on the live raw topics this way.
    raw_topic_prefix: str | None = None
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
    # slack on top of the receive-time watermark before a deadline fires: covers gateway
    # clock skew and records still in flight from a gateway when the watermark moved
    delivery_unknown_grace: float = 30.0
    # how often each normalize consumer writes watermark markers (processors/stream/
    # markers.py): the resolution of delivery_unknown; 0 means min(1 s, AFTER / 30)
    watermark_interval: float = 0.0
    # providers whose due messages are polled once before delivery_unknown (default: those
    # whose poller is configured in this environment, MSGSTATUS_<P>_API_URL)
    delivery_unknown_ask: frozenset[str] = frozenset()
    delivery_unknown_ask_timeout: float = 120.0
    state_retention: float = 30 * 86400.0
    state_marker_retention: float = 365 * 86400.0
    session_timeout: float = 10.0
    # How long the worker's Faust consumer lets the broker hold a fetch that finds nothing
    # new (Faust's own value is 1500): shorter hops between the worker's stages under
    # load, a few % of a core more per idle worker (docs/benchmarks-notes.md).
    fetch_max_wait_ms: int = 20
    # aiokafka batch size of the worker's producers: records of one partition sent together.
    # A table unit larger than this still travels as one batch of its own (kafka/writer.py).
    producer_batch_bytes: int = 512 * 1024
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
    # Seconds between two reads of the consumer groups' lag (processors/ops/lag.py).
    consumer_lag_interval: float = 15.0
    app_id: str = "msgstatus"
    produce_timeout: float = 5.0
    # `msgstatus poller`, and the provider settings that are not credentials
    poller: PollerConfig = field(default_factory=PollerConfig)
    provider_options: ProviderOptions = field(default_factory=ProviderOptions)
    # The gateway's event loop (processors/eventloop.py): "uvloop" or "asyncio".
    gateway_event_loop: str = "asyncio"
    log_level: str = "WARNING"
    # Kafka transport security (processors/kafka/client.py builds every client from these).
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = field(default=None, repr=False)
    kafka_ssl_cafile: str | None = None
    kafka_ssl_certfile: str | None = None
    kafka_ssl_keyfile: str | None = None
    kafka_ssl_key_password: str | None = field(default=None, repr=False)
    kafka_ssl_check_hostname: bool = True
    # Topics msgstatus creates: safe on a 3-broker cluster (one broker may be down and
    # acks=all writes still succeed); the local single broker sets 1 / 1.
    replication_factor: int = 3
    min_insync_replicas: int = 2
    # Redis auth and TLS; the URL may carry them too (rediss://user:password@host/0).
    redis_username: str | None = None
    redis_password: str | None = field(default=None, repr=False)
    redis_ssl_ca_file: str | None = None
    redis_ssl_cert_file: str | None = None
    redis_ssl_key_file: str | None = None
    # Redis keys are prefixed with this (default: MSGSTATUS_TOPIC_PREFIX), see redis_prefix.
    redis_key_prefix: str | None = None
    # Connections per process to Redis (state backend); callers wait for a free one.
    redis_pool_size: int = 16
    # Seconds a Redis connect, call or wait for a pooled connection may take before it
    # counts as Redis being down (the state backend then pauses and retries).
    redis_timeout: float = 5.0
    # Bytes of recently used message states each table of the Redis state backend keeps
    # in the worker's memory (a known state needs no read from Redis).
    redis_cache_bytes: int = 64 * 1024 * 1024
    # Provider credentials: every MSGSTATUS_* value that is not a typed setting above
    # (`TWILIO_AUTH_TOKEN`, ...; account identifiers bound to them too: `TWILIO_ACCOUNT_SID`).
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    # provider name -> its `[[providers.<name>.accounts]]` from the MSGSTATUS_CONFIG file
    accounts: Mapping[str, tuple[Account, ...]] = field(default_factory=dict)
    config_path: str | None = None

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    @property
    def raw_prefix(self) -> str:
        return self.topic_prefix if self.raw_topic_prefix is None else self.raw_topic_prefix

    @property
    def redis_prefix(self) -> str:
        """What every Redis key of this deployment starts with (before `msgstatus:`)."""
        return self.topic_prefix if self.redis_key_prefix is None else self.redis_key_prefix

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

    def poll_api_url(self, provider: str) -> str | None:
        """The provider's status API (MSGSTATUS_<P>_API_URL, else the first account's
        `api_url` from the config file)."""
        found = self.poller.api_urls.get(provider)
        accounts = self.accounts.get(provider, ())
        return found or next((a["api_url"] for a in accounts if "api_url" in a), None)

    def provider_accounts(self, provider: str) -> tuple[Account, ...]:
        """The provider's accounts from the config file (empty without a file)."""
        return tuple(self.accounts.get(provider, ()))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        given = os.environ if env is None else env
        env = reads = _Reads(given)
        d = cls()
        backend = env.get("MSGSTATUS_STATE_BACKEND", "rocksdb")
        if backend not in ("rocksdb", "redis"):
            raise ConfigError(f"MSGSTATUS_STATE_BACKEND must be rocksdb or redis, got {backend!r}")
        config_path = env.get("MSGSTATUS_CONFIG") or None
        secrets = _secrets(given)
        poller = PollerConfig.from_env(env)
        settings = cls(
            kafka_bootstrap=env.get("MSGSTATUS_KAFKA_BOOTSTRAP", d.kafka_bootstrap),
            topic_prefix=env.get("MSGSTATUS_TOPIC_PREFIX", ""),
            raw_topic_prefix=env.get("MSGSTATUS_RAW_TOPIC_PREFIX"),  # "" is a prefix too
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
            delivery_unknown_grace=_float(
                env, "MSGSTATUS_DELIVERY_UNKNOWN_GRACE", d.delivery_unknown_grace
            ),
            delivery_unknown_ask=_ask_providers(env, poller),
            watermark_interval=_float(env, "MSGSTATUS_WATERMARK_INTERVAL", d.watermark_interval),
            delivery_unknown_ask_timeout=_float(
                env, "MSGSTATUS_DELIVERY_UNKNOWN_ASK_TIMEOUT", d.delivery_unknown_ask_timeout
            ),
            state_retention=_float(env, "MSGSTATUS_STATE_RETENTION", d.state_retention),
            state_marker_retention=_float(
                env, "MSGSTATUS_STATE_MARKER_RETENTION", d.state_marker_retention
            ),
            session_timeout=_float(env, "MSGSTATUS_SESSION_TIMEOUT", d.session_timeout),
            replay_window=_float(env, "MSGSTATUS_REPLAY_WINDOW", d.replay_window),
            fetch_max_wait_ms=_int(env, "MSGSTATUS_FETCH_MAX_WAIT_MS", d.fetch_max_wait_ms),
            producer_batch_bytes=_int(
                env, "MSGSTATUS_PRODUCER_BATCH_BYTES", d.producer_batch_bytes
            ),
            api_token=secrets.get("API_TOKEN"),
            events_token=secrets.get("EVENTS_TOKEN"),
            http_header_timeout=_float(env, "MSGSTATUS_HTTP_HEADER_TIMEOUT", d.http_header_timeout),
            http_body_timeout=_float(env, "MSGSTATUS_HTTP_BODY_TIMEOUT", d.http_body_timeout),
            metrics_port=_int(env, "MSGSTATUS_METRICS_PORT", d.metrics_port),
            consumer_lag_interval=_float(
                env, "MSGSTATUS_CONSUMER_LAG_INTERVAL", d.consumer_lag_interval
            ),
            app_id=env.get("MSGSTATUS_APP_ID", d.app_id),
            produce_timeout=_float(env, "MSGSTATUS_PRODUCE_TIMEOUT", d.produce_timeout),
            poller=poller,
            provider_options=ProviderOptions.from_env(env),
            gateway_event_loop=_choice(
                env, "MSGSTATUS_GATEWAY_EVENT_LOOP", d.gateway_event_loop, EVENT_LOOPS
            ),
            log_level=env.get("MSGSTATUS_LOG_LEVEL", d.log_level).upper(),
            kafka_security_protocol=_upper_choice(
                env,
                "MSGSTATUS_KAFKA_SECURITY_PROTOCOL",
                d.kafka_security_protocol,
                KAFKA_SECURITY_PROTOCOLS,
            ),
            kafka_sasl_mechanism=_upper_choice(
                env, "MSGSTATUS_KAFKA_SASL_MECHANISM", d.kafka_sasl_mechanism, KAFKA_SASL_MECHANISMS
            ),
            kafka_sasl_username=env.get("MSGSTATUS_KAFKA_SASL_USERNAME") or None,
            kafka_sasl_password=env.get("MSGSTATUS_KAFKA_SASL_PASSWORD") or None,
            kafka_ssl_cafile=_readable_file(env, "MSGSTATUS_KAFKA_SSL_CAFILE"),
            kafka_ssl_certfile=_readable_file(env, "MSGSTATUS_KAFKA_SSL_CERTFILE"),
            kafka_ssl_keyfile=_readable_file(env, "MSGSTATUS_KAFKA_SSL_KEYFILE"),
            kafka_ssl_key_password=env.get("MSGSTATUS_KAFKA_SSL_KEY_PASSWORD") or None,
            kafka_ssl_check_hostname=_bool(
                env, "MSGSTATUS_KAFKA_SSL_CHECK_HOSTNAME", d.kafka_ssl_check_hostname
            ),
            replication_factor=_int(env, "MSGSTATUS_REPLICATION_FACTOR", d.replication_factor),
            min_insync_replicas=_int(env, "MSGSTATUS_MIN_INSYNC_REPLICAS", d.min_insync_replicas),
            redis_username=env.get("MSGSTATUS_REDIS_USERNAME") or None,
            redis_password=env.get("MSGSTATUS_REDIS_PASSWORD") or None,
            redis_ssl_ca_file=_readable_file(env, "MSGSTATUS_REDIS_SSL_CA_FILE"),
            redis_ssl_cert_file=_readable_file(env, "MSGSTATUS_REDIS_SSL_CERT_FILE"),
            redis_ssl_key_file=_readable_file(env, "MSGSTATUS_REDIS_SSL_KEY_FILE"),
            redis_key_prefix=env.get("MSGSTATUS_REDIS_KEY_PREFIX"),
            redis_pool_size=_int(env, "MSGSTATUS_REDIS_POOL_SIZE", d.redis_pool_size),
            redis_timeout=_float(env, "MSGSTATUS_REDIS_TIMEOUT", d.redis_timeout),
            redis_cache_bytes=_int(env, "MSGSTATUS_REDIS_CACHE_MB", d.redis_cache_bytes >> 20)
            << 20,
            secrets={k: v for k, v in secrets.items() if f"MSGSTATUS_{k}" not in reads.read},
            accounts=load_accounts(config_path) if config_path else {},
            config_path=config_path,
        )
        if settings.partitions < 1:
            raise ConfigError("MSGSTATUS_PARTITIONS must be at least 1")
        if settings.max_body_bytes < 1:
            raise ConfigError("MSGSTATUS_MAX_BODY_BYTES must be positive")
        if settings.replay_window < 0:
            raise ConfigError("MSGSTATUS_REPLAY_WINDOW must not be negative")
        if not 0 <= settings.fetch_max_wait_ms <= 10_000:
            raise ConfigError("MSGSTATUS_FETCH_MAX_WAIT_MS must be between 0 and 10000")
        if not 1024 <= settings.producer_batch_bytes <= 8 * 1024 * 1024:
            raise ConfigError("MSGSTATUS_PRODUCER_BATCH_BYTES must be between 1024 and 8388608")
        _check_deadlines(settings)
        if settings.watermark_interval < 0:
            raise ConfigError("MSGSTATUS_WATERMARK_INTERVAL must not be negative")
        if settings.watermark_interval == 0:
            interval = max(0.2, min(1.0, settings.delivery_unknown_after / 30))
            settings = dataclasses.replace(settings, watermark_interval=interval)
        if settings.consumer_lag_interval <= 0:
            raise ConfigError("MSGSTATUS_CONSUMER_LAG_INTERVAL must be positive")
        if not 1 <= settings.redis_pool_size <= 1024:
            raise ConfigError("MSGSTATUS_REDIS_POOL_SIZE must be between 1 and 1024")
        if not 0 < settings.redis_timeout <= 300:
            raise ConfigError("MSGSTATUS_REDIS_TIMEOUT must be more than 0 and at most 300 seconds")
        if "{" in settings.redis_prefix or "}" in settings.redis_prefix:
            raise ConfigError(
                "MSGSTATUS_REDIS_KEY_PREFIX (or MSGSTATUS_TOPIC_PREFIX) must not contain { or }: "
                "they would change the keys' Redis Cluster hash tags"
            )
        if settings.redis_cache_bytes < 0:
            raise ConfigError("MSGSTATUS_REDIS_CACHE_MB must not be negative")
        settings.check_transport()
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

    def check_transport(self) -> None:
        """The Kafka/Redis security and replication settings fit together (ConfigError)."""
        if self.replication_factor < 1:
            raise ConfigError("MSGSTATUS_REPLICATION_FACTOR must be at least 1")
        if not 1 <= self.min_insync_replicas <= self.replication_factor:
            raise ConfigError(
                f"MSGSTATUS_MIN_INSYNC_REPLICAS must be between 1 and "
                f"MSGSTATUS_REPLICATION_FACTOR ({self.replication_factor}), "
                f"got {self.min_insync_replicas}"
            )
        protocol = self.kafka_security_protocol
        if protocol.startswith("SASL") and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ConfigError(
                f"MSGSTATUS_KAFKA_SECURITY_PROTOCOL={protocol} needs "
                "MSGSTATUS_KAFKA_SASL_USERNAME and MSGSTATUS_KAFKA_SASL_PASSWORD"
            )
        if not protocol.startswith("SASL") and self.kafka_sasl_username:
            raise ConfigError(
                f"MSGSTATUS_KAFKA_SASL_USERNAME is set but MSGSTATUS_KAFKA_SECURITY_PROTOCOL is "
                f"{protocol}: set it to SASL_SSL (or SASL_PLAINTEXT) to authenticate"
            )
        tls_files = (self.kafka_ssl_cafile, self.kafka_ssl_certfile, self.kafka_ssl_keyfile)
        if any(tls_files) and not protocol.endswith("SSL"):
            raise ConfigError(
                f"MSGSTATUS_KAFKA_SSL_* files are set but MSGSTATUS_KAFKA_SECURITY_PROTOCOL is "
                f"{protocol}: set it to SSL or SASL_SSL"
            )
        if bool(self.kafka_ssl_certfile) != bool(self.kafka_ssl_keyfile):
            raise ConfigError(
                "MSGSTATUS_KAFKA_SSL_CERTFILE and MSGSTATUS_KAFKA_SSL_KEYFILE go together "
                "(a client certificate needs its key)"
            )
        if bool(self.redis_ssl_cert_file) != bool(self.redis_ssl_key_file):
            raise ConfigError(
                "MSGSTATUS_REDIS_SSL_CERT_FILE and MSGSTATUS_REDIS_SSL_KEY_FILE go together"
            )
        redis_tls = (self.redis_ssl_ca_file, self.redis_ssl_cert_file)
        if any(redis_tls) and not self.redis_url.startswith("rediss://"):
            raise ConfigError(
                "MSGSTATUS_REDIS_SSL_* files are set but MSGSTATUS_REDIS_URL is not a "
                "rediss:// URL (TLS)"
            )


# One development or test broker (deploy/local, the test suite, the bench) cannot
# replicate: topics there get replication factor 1 and min.insync.replicas 1.
SINGLE_BROKER_ENV = {"MSGSTATUS_REPLICATION_FACTOR": "1", "MSGSTATUS_MIN_INSYNC_REPLICAS": "1"}


def single_broker(**values: Any) -> Settings:
    """Settings for a one-broker cluster (replication 1/1), other fields as given."""
    return Settings(replication_factor=1, min_insync_replicas=1, **values)
