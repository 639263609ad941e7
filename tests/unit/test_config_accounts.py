"""Several accounts per provider from the MSGSTATUS_CONFIG TOML file.

Meta tries every configured secret in constant time; Twilio binds a callback to the
account its AccountSid names and, with several accounts, refuses one that names none of
them; a malformed file is a ConfigError naming the file and the key.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from processors.config import ConfigError, Settings
from processors.providers import meta, twilio
from processors.providers.base import FramingError, SignatureError, WebhookRequest

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "msgstatus.example.toml"
URL = "https://status.example.com/webhooks/twilio"
SID_EU = "AC" + "e" * 32
SID_US = "AC" + "u" * 32

TWO_ACCOUNTS = f"""
[[providers.twilio.accounts]]
name = "eu"
account_sid = "{SID_EU}"
auth_token = "token-eu"

[[providers.twilio.accounts]]
name = "us"
account_sid = "{SID_US}"
auth_token = "token-us"

[[providers.meta.accounts]]
name = "brand-a"
app_secret = "secret-a"
verify_token = "verify-a"

[[providers.meta.accounts]]
name = "brand-b"
app_secret = "secret-b"
verify_token = "verify-b"
"""


def settings_with(tmp_path: Path, text: str, **env: str) -> Settings:
    path = tmp_path / "msgstatus.toml"
    path.write_text(text)
    return Settings.from_env({"MSGSTATUS_CONFIG": str(path), **env})


def twilio_request(token: str, account_sid: str | None = SID_US) -> WebhookRequest:
    pairs = [("MessageSid", "SM" + "1" * 32), ("MessageStatus", "delivered")]
    if account_sid:
        pairs.append(("AccountSid", account_sid))
    body = "&".join(f"{k}={v}" for k, v in pairs).encode()
    return WebhookRequest(
        provider="twilio",
        method="POST",
        url=URL,
        headers=twilio.sign(URL, body, token),
        body=body,
        received_at=0.0,
    )


def meta_request(secret: str) -> WebhookRequest:
    body = b'{"object":"whatsapp_business_account","entry":[]}'
    return WebhookRequest(
        provider="meta",
        method="POST",
        url="https://status.example.com/webhooks/meta",
        headers=meta.sign("", body, secret),
        body=body,
        received_at=0.0,
    )


# --- secrets_for ----------------------------------------------------------------------


def test_secrets_for_lists_env_first_then_every_account(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, TWO_ACCOUNTS, MSGSTATUS_TWILIO_AUTH_TOKEN="token-env")
    assert settings.secrets_for("TWILIO_AUTH_TOKEN") == ["token-env", "token-eu", "token-us"]
    assert settings.secrets_for("META_APP_SECRET") == ["secret-a", "secret-b"]
    assert settings.secrets_for("META_VERIFY_TOKEN") == ["verify-a", "verify-b"]
    assert settings.secrets_for("RYZE_TOKEN") == []
    assert settings.secret("TWILIO_AUTH_TOKEN") == "token-env"
    assert settings.secret("META_APP_SECRET") == "secret-a"  # first account


def test_repeated_values_are_listed_once(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, TWO_ACCOUNTS, MSGSTATUS_TWILIO_AUTH_TOKEN="token-eu")
    assert settings.secrets_for("TWILIO_AUTH_TOKEN") == ["token-eu", "token-us"]


def test_without_a_file_nothing_changes() -> None:
    settings = Settings.from_env({"MSGSTATUS_TWILIO_AUTH_TOKEN": "only"})
    assert settings.secrets_for("TWILIO_AUTH_TOKEN") == ["only"]
    assert settings.accounts == {} and settings.config_path is None
    assert Settings().secrets_for("TWILIO_AUTH_TOKEN") == []


def test_enabled_when_only_the_file_configures_a_provider(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, TWO_ACCOUNTS)
    assert twilio.enabled(settings)
    assert meta.enabled(settings)
    assert not Settings().secrets_for("TWILIO_AUTH_TOKEN")
    assert not twilio.enabled(Settings())


def test_the_example_file_loads() -> None:
    settings = Settings.from_env({"MSGSTATUS_CONFIG": str(EXAMPLE)})
    assert len(settings.secrets_for("TWILIO_AUTH_TOKEN")) >= 2
    assert len(settings.secrets_for("META_APP_SECRET")) >= 2


# --- Twilio ---------------------------------------------------------------------------


def test_twilio_request_signed_by_the_second_account_passes(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, TWO_ACCOUNTS)
    twilio.verify(twilio_request("token-us"), settings)
    twilio.verify(twilio_request("token-eu", SID_EU), settings)


def test_twilio_request_signed_by_neither_fails(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, TWO_ACCOUNTS)
    with pytest.raises(SignatureError, match="does not match"):
        twilio.verify(twilio_request("token-other"), settings)


def test_twilio_account_sid_selects_its_own_token(tmp_path: Path) -> None:
    """A callback naming the US account must carry the US token, not another account's."""
    settings = settings_with(tmp_path, TWO_ACCOUNTS)
    assert twilio.auth_tokens(settings, SID_US) == ["token-us"]
    with pytest.raises(SignatureError):
        twilio.verify(twilio_request("token-eu", SID_US), settings)


def test_twilio_several_accounts_fail_closed(tmp_path: Path) -> None:
    """Finding: a callback with no or an unknown AccountSid was checked against every
    account's token, so any account could vouch for a callback claiming none or a
    stranger. With several accounts it must name one of them."""
    settings = settings_with(tmp_path, TWO_ACCOUNTS)
    assert twilio.auth_tokens(settings, "AC-unknown") == []
    assert twilio.auth_tokens(settings, None) == []
    for request in (
        twilio_request("token-us", account_sid=None),
        twilio_request("token-us", account_sid="AC" + "0" * 32),
    ):
        with pytest.raises(SignatureError, match="not a configured account"):
            twilio.verify(request, settings)


def test_twilio_json_callback_is_bound_to_its_account(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, TWO_ACCOUNTS)

    def json_request(token: str, fields: dict[str, str]) -> WebhookRequest:
        body = orjson.dumps(fields)
        url = f"{URL}?bodySHA256={twilio.body_sha256(body)}"
        headers = twilio.sign(url, body, token, json_body=True)
        return WebhookRequest("twilio", "POST", url, headers, body, 0.0)

    fields = {"MessageSid": "SM" + "1" * 32, "MessageStatus": "delivered"}
    twilio.verify(json_request("token-eu", {**fields, "AccountSid": SID_EU}), settings)
    with pytest.raises(SignatureError):
        twilio.verify(json_request("token-eu", {**fields, "AccountSid": SID_US}), settings)
    with pytest.raises(SignatureError, match="not a configured account"):
        twilio.verify(json_request("token-eu", fields), settings)


def test_twilio_repeated_account_sid_cannot_pick_another_account(tmp_path: Path) -> None:
    """Finding: verify read the last AccountSid, parse the first: a form naming US then
    EU, signed with EU's token, passed and its event was attributed to US."""
    settings = settings_with(tmp_path, TWO_ACCOUNTS)
    pairs = [
        ("MessageSid", "SM" + "1" * 32),
        ("MessageStatus", "delivered"),
        ("AccountSid", SID_US),
        ("AccountSid", SID_EU),
    ]
    body = "&".join(f"{k}={v}" for k, v in pairs).encode()
    request = WebhookRequest("twilio", "POST", URL, twilio.sign(URL, body, "token-eu"), body, 0.0)
    with pytest.raises(FramingError, match="repeats AccountSid"):
        twilio.verify(request, settings)
    # the parse the verdict depends on is the one parse() uses: the first value
    assert twilio.parse(request).events[0].account == SID_US


def test_twilio_env_token_is_bound_by_its_account_sid(tmp_path: Path) -> None:
    settings = settings_with(
        tmp_path,
        TWO_ACCOUNTS,
        MSGSTATUS_TWILIO_AUTH_TOKEN="token-env",
        MSGSTATUS_TWILIO_ACCOUNT_SID="AC-not-in-file",
    )
    twilio.verify(twilio_request("token-env", account_sid="AC-not-in-file"), settings)
    with pytest.raises(SignatureError):
        twilio.verify(twilio_request("token-env", account_sid=SID_US), settings)
    unbound = settings_with(tmp_path, TWO_ACCOUNTS, MSGSTATUS_TWILIO_AUTH_TOKEN="token-env")
    with pytest.raises(SignatureError, match="not a configured account"):
        twilio.verify(twilio_request("token-env", account_sid="AC-not-in-file"), unbound)


def test_twilio_single_account_needs_no_account_sid() -> None:
    settings = Settings.from_env({"MSGSTATUS_TWILIO_AUTH_TOKEN": "only"})
    twilio.verify(twilio_request("only", account_sid=None), settings)
    twilio.verify(twilio_request("only", account_sid="AC-anything"), settings)


# --- Meta -----------------------------------------------------------------------------


def test_meta_request_signed_by_the_second_app_passes(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, TWO_ACCOUNTS)
    meta.verify(meta_request("secret-b"), settings)
    meta.verify(meta_request("secret-a"), settings)


def test_meta_request_signed_by_neither_fails(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, TWO_ACCOUNTS)
    with pytest.raises(SignatureError, match="does not match"):
        meta.verify(meta_request("secret-c"), settings)


def test_meta_handshake_accepts_any_configured_verify_token(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, TWO_ACCOUNTS)
    query = {"hub.mode": "subscribe", "hub.challenge": "42", "hub.verify_token": "verify-b"}
    assert meta.handshake(query, settings) == "42"
    assert meta.handshake({**query, "hub.verify_token": "verify-c"}, settings) is None
    assert meta.handshake({**query, "hub.verify_token": ""}, settings) is None


# --- malformed files -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[[providers.twilio.accounts]\nauth_token = 'x'\n", ["not valid TOML", "line"]),
        ("[[providers.twilio.accounts]]\nauth_token = 42\n", ["providers.twilio.accounts[0]"]),
        (
            "[[providers.meta.accounts]]\napp_secret = 'a'\n[[providers.meta.accounts]]\n"
            "app_secret = ''\n",
            ["providers.meta.accounts[1].app_secret"],
        ),
        ("[providers.twilio]\naccounts = 'x'\n", ["providers.twilio.accounts"]),
        ("[providers.twilio]\nauth_token = 'x'\n", ["providers.twilio.auth_token"]),
        ("providers = 3\n", ["providers must be a table"]),
        ("[twilio]\nauth_token = 'x'\n", ["'twilio'"]),
        (
            "[[providers.twilio.accounts]]\nname = 'eu'\nauth_token = 'a'\n"
            "[[providers.twilio.accounts]]\nname = 'eu'\nauth_token = 'b'\n",
            ["providers.twilio.accounts[1].name", "twice"],
        ),
    ],
    ids=[
        "syntax",
        "not-a-string",
        "empty",
        "not-an-array",
        "unknown-key",
        "providers",
        "top-level",
        "duplicate-name",
    ],
)
def test_malformed_file_is_a_clear_config_error(
    tmp_path: Path, text: str, names: list[str]
) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"MSGSTATUS_CONFIG": str(path)})
    message = str(caught.value)
    assert str(path) in message
    for name in names:
        assert name in message


def test_secret_values_never_appear_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[[providers.twilio.accounts]]\nauth_token = 'super-secret'\nbad = 1\n")
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"MSGSTATUS_CONFIG": str(path)})
    assert "super-secret" not in str(caught.value)
    assert "providers.twilio.accounts[0].bad" in str(caught.value)


def test_missing_file_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"MSGSTATUS_CONFIG=.*cannot read"):
        Settings.from_env({"MSGSTATUS_CONFIG": str(tmp_path / "absent.toml")})


def test_state_backend_and_redis_connection_settings():
    import pytest as _pytest

    from processors.config import ConfigError, Settings

    assert Settings.from_env({}).state_backend == "rocksdb"
    settings = Settings.from_env(
        {
            "MSGSTATUS_STATE_BACKEND": "redis",
            "MSGSTATUS_TOPIC_PREFIX": "prod.",
            "MSGSTATUS_REDIS_POOL_SIZE": "32",
            "MSGSTATUS_REDIS_TIMEOUT": "2.5",
            "MSGSTATUS_REDIS_CACHE_MB": "16",
        }
    )
    assert settings.state_backend == "redis"
    assert (settings.redis_pool_size, settings.redis_timeout) == (32, 2.5)
    assert settings.redis_cache_bytes == 16 << 20
    assert settings.redis_prefix == "prod."  # the topic prefix unless told otherwise
    assert Settings.from_env({"MSGSTATUS_REDIS_KEY_PREFIX": "eu1:"}).redis_prefix == "eu1:"
    with _pytest.raises(ConfigError, match="rocksdb or redis"):
        Settings.from_env({"MSGSTATUS_STATE_BACKEND": "sqlite"})
    for name, bad in (
        ("MSGSTATUS_REDIS_POOL_SIZE", "0"),
        ("MSGSTATUS_REDIS_TIMEOUT", "0"),
        ("MSGSTATUS_REDIS_CACHE_MB", "-1"),
        ("MSGSTATUS_REDIS_KEY_PREFIX", "a{b}"),
    ):
        with _pytest.raises(ConfigError, match=name if "{" not in bad else "must not contain"):
            Settings.from_env({name: bad})
