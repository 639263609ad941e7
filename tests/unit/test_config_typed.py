"""Settings that are not secrets are typed in processors/config.py; Settings.secrets keeps
only provider credentials."""

from __future__ import annotations

import pytest

from processors import providers
from processors.config import ConfigError, PollerConfig, ProviderOptions, Settings

ENV = {
    "MSGSTATUS_KAFKA_BOOTSTRAP": "127.0.0.1:19092",
    "MSGSTATUS_TWILIO_AUTH_TOKEN": "twilio-secret",
    "MSGSTATUS_TWILIO_ACCOUNT_SID": "AC123",
    "MSGSTATUS_RYZE_API_URL": "https://ryze.example",
    "MSGSTATUS_RYZE_API_TOKEN": "ryze-api-token",
    "MSGSTATUS_RYZE_RATE_LIMIT": "30",
    "MSGSTATUS_POLL_INTERVAL": "2.5",
    "MSGSTATUS_POLLER_METRICS_PORT": "0",
    "MSGSTATUS_SES_AUTO_CONFIRM": "off",
    "MSGSTATUS_VONAGE_SIGNATURE_METHOD": "SHA512",
    "MSGSTATUS_BIRD_MAX_AGE": "600",
}


def test_secrets_hold_credentials_only() -> None:
    settings = Settings.from_env(ENV)
    assert dict(settings.secrets) == {
        "TWILIO_AUTH_TOKEN": "twilio-secret",
        "TWILIO_ACCOUNT_SID": "AC123",  # bound to its token (several accounts)
        "RYZE_API_TOKEN": "ryze-api-token",
    }


def test_poller_and_provider_settings_are_typed() -> None:
    settings = Settings.from_env(ENV)
    assert settings.poller == PollerConfig(
        interval=2.5,
        metrics_port=0,
        api_urls={"ryze": "https://ryze.example"},
        rate_limits={"ryze": 30},
    )
    assert settings.provider_options == ProviderOptions(
        ses_auto_confirm=False, vonage_signature_method="sha512", bird_max_age=600.0
    )
    assert settings.poll_api_url("ryze") == "https://ryze.example"
    assert settings.delivery_unknown_ask == {"ryze"}  # its poller is configured
    assert Settings.from_env({}).provider_options == ProviderOptions()


def test_a_poll_api_url_may_come_from_the_config_file(tmp_path) -> None:
    path = tmp_path / "msgstatus.toml"
    path.write_text('[[providers.octopods.accounts]]\napi_url = "https://octo.example"\n')
    settings = Settings.from_env({"MSGSTATUS_CONFIG": str(path)})
    assert settings.poll_api_url("octopods") == "https://octo.example"


@pytest.mark.parametrize(
    "env",
    [
        {"MSGSTATUS_POLL_INTERVAL": "soon"},
        {"MSGSTATUS_POLL_INTERVAL": "0"},
        {"MSGSTATUS_POLL_CONCURRENCY": "-1"},
        {"MSGSTATUS_POLL_CONCURRENCY": "4.5"},
        {"MSGSTATUS_POLLER_METRICS_PORT": "-1"},
        {"MSGSTATUS_RYZE_RATE_LIMIT": "0"},
        {"MSGSTATUS_RYZE_API_URL": "ryze.example"},
        {"MSGSTATUS_SES_AUTO_CONFIRM": "maybe"},
        {"MSGSTATUS_VONAGE_SIGNATURE_METHOD": "crc32"},
        {"MSGSTATUS_VONAGE_MESSAGES_MAX_AGE": "-5"},
        {"MSGSTATUS_BIRD_MAX_AGE": "nan"},
    ],
)
def test_bad_typed_settings_are_refused_at_start(env: dict[str, str]) -> None:
    name = next(iter(env))
    with pytest.raises(ConfigError, match=name):
        Settings.from_env(env)


def test_only_pollable_providers_can_be_asked_before_delivery_unknown() -> None:
    assert {"ryze", "octopods"} == providers.POLLABLE
    providers.check(Settings.from_env({"MSGSTATUS_DELIVERY_UNKNOWN_ASK": "ryze,octopods"}))
    providers.check(Settings.from_env({}))
    with pytest.raises(ConfigError, match="twilio cannot be polled"):
        providers.check(Settings.from_env({"MSGSTATUS_DELIVERY_UNKNOWN_ASK": "twilio"}))
    with pytest.raises(ConfigError, match="twilio cannot be polled"):  # a URL, but no POLLING
        providers.check(Settings.from_env({"MSGSTATUS_TWILIO_API_URL": "https://t.example"}))
