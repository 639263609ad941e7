"""Issue 12, configuration: secrets are stripped and blank ones refused at start-up, the
read and write tokens of the API are separate, the new limits are validated."""

from __future__ import annotations

import pytest

from processors.config import ConfigError, Settings
from processors.providers import ryze


@pytest.mark.parametrize("value", [" ", "   ", "\n", "\t \n"])
def test_a_blank_secret_is_refused_at_start_up(value: str) -> None:
    """Finding: a whitespace-only MSGSTATUS_RYZE_TOKEN enabled RyzeAPI with a token of
    spaces. Old code: Settings.from_env accepted it and ryze.enabled() was True."""
    with pytest.raises(ConfigError, match="MSGSTATUS_RYZE_TOKEN is set but blank"):
        Settings.from_env({"MSGSTATUS_RYZE_TOKEN": value})


def test_secrets_are_stripped() -> None:
    settings = Settings.from_env(
        {"MSGSTATUS_RYZE_TOKEN": " tok-1\n", "MSGSTATUS_API_TOKEN": "read\n"}
    )
    assert settings.secret("RYZE_TOKEN") == "tok-1" and settings.api_token == "read"
    assert ryze.enabled(settings)


def test_an_empty_value_still_means_unset() -> None:
    settings = Settings.from_env({"MSGSTATUS_RYZE_TOKEN": ""})
    assert settings.secret("RYZE_TOKEN") is None and not ryze.enabled(settings)


def test_a_secret_that_is_not_utf8_is_refused() -> None:
    """os.environ keeps undecodable bytes as lone surrogates; HMAC keys could never be
    built from them (a 500 per request)."""
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        Settings.from_env({"MSGSTATUS_META_APP_SECRET": "sec\udcffret"})


def test_a_blank_account_value_in_the_config_file_is_refused(tmp_path) -> None:
    path = tmp_path / "msgstatus.toml"
    path.write_text('[[providers.twilio.accounts]]\nauth_token = "  "\n')
    with pytest.raises(ConfigError, match="non-empty string"):
        Settings.from_env({"MSGSTATUS_CONFIG": str(path)})
    path.write_text('[[providers.twilio.accounts]]\nauth_token = " tok\\n"\n')
    assert Settings.from_env({"MSGSTATUS_CONFIG": str(path)}).secrets_for("TWILIO_AUTH_TOKEN") == [
        "tok"
    ]


def test_read_and_write_tokens_are_separate_and_must_differ() -> None:
    """Finding: the read token of /v1/messages also wrote /v1/events."""
    settings = Settings.from_env(
        {"MSGSTATUS_API_TOKEN": "read-token", "MSGSTATUS_EVENTS_TOKEN": "write-token"}
    )
    assert (settings.api_token, settings.events_token) == ("read-token", "write-token")
    with pytest.raises(ConfigError, match="must differ"):
        Settings.from_env({"MSGSTATUS_API_TOKEN": "same", "MSGSTATUS_EVENTS_TOKEN": " same "})


def test_replay_window_and_read_timeouts() -> None:
    defaults = Settings.from_env({})
    assert defaults.replay_window == 300.0
    assert (defaults.http_header_timeout, defaults.http_body_timeout) == (15.0, 30.0)
    settings = Settings.from_env(
        {
            "MSGSTATUS_REPLAY_WINDOW": "600",
            "MSGSTATUS_HTTP_HEADER_TIMEOUT": "5",
            "MSGSTATUS_HTTP_BODY_TIMEOUT": "12.5",
        }
    )
    assert (settings.replay_window, settings.http_header_timeout) == (600.0, 5.0)
    assert settings.http_body_timeout == 12.5
    assert Settings.from_env({"MSGSTATUS_REPLAY_WINDOW": "0"}).replay_window == 0.0
    for name, value in (
        ("MSGSTATUS_REPLAY_WINDOW", "-1"),
        ("MSGSTATUS_REPLAY_WINDOW", "nan"),
        ("MSGSTATUS_REPLAY_WINDOW", "1e9"),
        ("MSGSTATUS_HTTP_HEADER_TIMEOUT", "0"),
        ("MSGSTATUS_HTTP_BODY_TIMEOUT", "inf"),
        ("MSGSTATUS_HTTP_BODY_TIMEOUT", "soon"),
    ):
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({name: value})
