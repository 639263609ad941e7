"""Kafka/Redis transport settings and the one place every Kafka client is built from."""

from __future__ import annotations

import ssl
from pathlib import Path

import faust
import pytest
from support.tls import make_pki

from processors.config import ConfigError, Settings
from processors.kafka import client as kafka_client
from processors.kafka.topics import (
    MAX_MESSAGE_BYTES,
    changelog_topic,
    internal_topics,
    topic_configs,
)

BASE = {"MSGSTATUS_KAFKA_BOOTSTRAP": "127.0.0.1:9092"}


def settings(**env: str) -> Settings:
    return Settings.from_env({**BASE, **env})


def test_plaintext_by_default_and_a_list_of_servers() -> None:
    s = settings(MSGSTATUS_KAFKA_BOOTSTRAP=" 127.0.0.1:9092, 127.0.0.2:9092 ")
    assert kafka_client.client_kwargs(s) == {
        "bootstrap_servers": ["127.0.0.1:9092", "127.0.0.2:9092"],
        "security_protocol": "PLAINTEXT",
    }
    assert kafka_client.faust_kwargs(s) == {
        "broker": ["kafka://127.0.0.1:9092", "kafka://127.0.0.2:9092"],
        "broker_credentials": None,
    }


def test_production_defaults_replicate_and_local_overrides() -> None:
    s = settings()
    assert (s.replication_factor, s.min_insync_replicas) == (3, 2)
    local = settings(MSGSTATUS_REPLICATION_FACTOR="1", MSGSTATUS_MIN_INSYNC_REPLICAS="1")
    assert (local.replication_factor, local.min_insync_replicas) == (1, 1)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MSGSTATUS_REPLICATION_FACTOR": "0"}, "MSGSTATUS_REPLICATION_FACTOR must be at least 1"),
        ({"MSGSTATUS_REPLICATION_FACTOR": "1"}, "MSGSTATUS_MIN_INSYNC_REPLICAS must be between 1"),
        ({"MSGSTATUS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "needs MSGSTATUS_KAFKA_SASL_USERNAME"),
        ({"MSGSTATUS_KAFKA_SECURITY_PROTOCOL": "TLS"}, "must be one of PLAINTEXT, SSL"),
        ({"MSGSTATUS_KAFKA_SASL_MECHANISM": "GSSAPI"}, "must be one of PLAIN, SCRAM-SHA-256"),
        ({"MSGSTATUS_KAFKA_SASL_USERNAME": "u"}, "set it to SASL_SSL"),
        ({"MSGSTATUS_KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"}, "cannot read it"),
        ({"MSGSTATUS_KAFKA_SSL_CHECK_HOSTNAME": "maybe"}, "must be true or false"),
        ({"MSGSTATUS_REDIS_SSL_CA_FILE": "/nonexistent/ca.pem"}, "cannot read it"),
    ],
)
def test_bad_transport_settings_are_refused_at_start(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings(**env)


def test_tls_files_need_an_ssl_protocol(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    with pytest.raises(ConfigError, match="set it to SSL or SASL_SSL"):
        settings(MSGSTATUS_KAFKA_SSL_CAFILE=str(pki.ca))
    with pytest.raises(ConfigError, match="go together"):
        settings(
            MSGSTATUS_KAFKA_SECURITY_PROTOCOL="SSL",
            MSGSTATUS_KAFKA_SSL_CERTFILE=str(pki.client_cert),
        )
    with pytest.raises(ConfigError, match="not a rediss:// URL"):
        settings(MSGSTATUS_REDIS_SSL_CA_FILE=str(pki.ca))


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "scram-sha-512"])
def test_sasl_plaintext_arguments(mechanism: str) -> None:
    s = settings(
        MSGSTATUS_KAFKA_SECURITY_PROTOCOL="sasl_plaintext",
        MSGSTATUS_KAFKA_SASL_MECHANISM=mechanism,
        MSGSTATUS_KAFKA_SASL_USERNAME="msgstatus",
        MSGSTATUS_KAFKA_SASL_PASSWORD="s3cret",
    )
    kwargs = kafka_client.client_kwargs(s)
    assert kwargs == {
        "bootstrap_servers": ["127.0.0.1:9092"],
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism.upper(),
        "sasl_plain_username": "msgstatus",
        "sasl_plain_password": "s3cret",
    }
    credentials = kafka_client.faust_kwargs(s)["broker_credentials"]
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.mechanism.value == mechanism.upper()
    assert "s3cret" not in repr(s) and "s3cret" not in kafka_client.describe(s)


def test_sasl_ssl_with_ca_and_client_certificate(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    s = settings(
        MSGSTATUS_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        MSGSTATUS_KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
        MSGSTATUS_KAFKA_SASL_USERNAME="msgstatus",
        MSGSTATUS_KAFKA_SASL_PASSWORD="s3cret",
        MSGSTATUS_KAFKA_SSL_CAFILE=str(pki.ca),
        MSGSTATUS_KAFKA_SSL_CERTFILE=str(pki.client_cert),
        MSGSTATUS_KAFKA_SSL_KEYFILE=str(pki.client_key),
    )
    kwargs = kafka_client.client_kwargs(s)
    context = kwargs["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert kwargs["security_protocol"] == "SASL_SSL"
    credentials = kafka_client.faust_kwargs(s)["broker_credentials"]
    assert credentials.protocol.value == "SASL_SSL"
    # The restore consumer next to the Faust app connects exactly as the app does.
    app = faust.App("t-client", **kafka_client.faust_kwargs(s))
    derived = kafka_client.from_faust_app(app)
    assert derived["bootstrap_servers"] == ["127.0.0.1:9092"]
    assert derived["security_protocol"] == "SASL_SSL"
    assert derived["sasl_mechanism"] == "SCRAM-SHA-512"
    assert derived["sasl_plain_password"] == "s3cret"


def test_ssl_without_hostname_check(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    s = settings(
        MSGSTATUS_KAFKA_SECURITY_PROTOCOL="SSL",
        MSGSTATUS_KAFKA_SSL_CAFILE=str(pki.ca),
        MSGSTATUS_KAFKA_SSL_CHECK_HOSTNAME="false",
    )
    context = kafka_client.ssl_context(s)
    assert context is not None and not context.check_hostname
    credentials = kafka_client.faust_kwargs(s)["broker_credentials"]
    assert isinstance(credentials, faust.SSLCredentials)
    app = faust.App("t-ssl", **kafka_client.faust_kwargs(s))
    assert kafka_client.from_faust_app(app)["security_protocol"] == "SSL"


def test_topic_configs_replication_and_message_size() -> None:
    s = Settings(topic_prefix="p.", min_insync_replicas=2)
    assert topic_configs(s, "p.raw.twilio") == {"min.insync.replicas": "2"}
    assert topic_configs(s, "p.message.status") == {"min.insync.replicas": "2"}
    for name in ("p.status.canonical", "p.status.transitions", "p.status.conversations"):
        assert topic_configs(s, name)["max.message.bytes"] == str(MAX_MESSAGE_BYTES) == "8388608"
    changelog = changelog_topic(s, "ordering")
    assert topic_configs(s, changelog) == {
        "min.insync.replicas": "2",
        "cleanup.policy": "compact",
        "max.message.bytes": "8388608",
    }
    assert len(internal_topics(s)) == 6
