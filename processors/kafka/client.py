"""Every Kafka client msgstatus creates gets its connection settings here, in one place.

The gateway's producer, the worker's Faust app and its own aiokafka consumers, the
poller, the ops commands, topic creation, the lag exporter and the bench all call
`client_kwargs(settings)` (aiokafka keyword arguments) or `faust_kwargs(settings)`
(the Faust app's broker and credentials), so TLS and SASL (PLAIN, SCRAM-SHA-256/512)
reach all of them or none (docs/configuration.md, "Kafka transport security").
"""

from __future__ import annotations

import ssl
from typing import Any

from processors.config import ConfigError, Settings


def bootstrap_servers(settings: Settings) -> list[str]:
    """`host:port` entries of MSGSTATUS_KAFKA_BOOTSTRAP (comma separated)."""
    servers = [part.strip() for part in settings.kafka_bootstrap.split(",") if part.strip()]
    if not servers:
        raise ConfigError("MSGSTATUS_KAFKA_BOOTSTRAP is empty")
    return servers


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for SSL and SASL_SSL: the CA file (else the system's trust store),
    an optional client certificate, hostname checks unless turned off. None without TLS.
    """
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    context = ssl.create_default_context(cafile=settings.kafka_ssl_cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.kafka_ssl_certfile:
        context.load_cert_chain(
            settings.kafka_ssl_certfile,
            settings.kafka_ssl_keyfile,
            password=settings.kafka_ssl_key_password,
        )
    if not settings.kafka_ssl_check_hostname:
        context.check_hostname = False
    return context


def security_kwargs(settings: Settings) -> dict[str, Any]:
    """aiokafka's security arguments (no bootstrap): for clients built elsewhere."""
    protocol = settings.kafka_security_protocol
    kwargs: dict[str, Any] = {"security_protocol": protocol}
    context = ssl_context(settings)
    if context is not None:
        kwargs["ssl_context"] = context
    if protocol.startswith("SASL"):
        kwargs.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=settings.kafka_sasl_password,
        )
    return kwargs


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """`bootstrap_servers` plus security arguments for AIOKafkaProducer, AIOKafkaConsumer
    and AIOKafkaAdminClient: `AIOKafkaProducer(**client_kwargs(settings), acks="all")`."""
    return {"bootstrap_servers": bootstrap_servers(settings), **security_kwargs(settings)}


def faust_credentials(settings: Settings) -> Any:
    """Faust's `broker_credentials` for the configured protocol (None for PLAINTEXT)."""
    import faust

    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = ssl_context(settings)
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password,
        mechanism=settings.kafka_sasl_mechanism,
        ssl_context=context,
    )


def faust_kwargs(settings: Settings) -> dict[str, Any]:
    """The Faust app's broker URLs and credentials: `faust.App(id, **faust_kwargs(s), ...)`.

    Faust hands the credentials to every client it makes (producer, consumer, the admin
    that creates its topics), mapping them back to the arguments `client_kwargs` gives.
    """
    return {
        "broker": [f"kafka://{server}" for server in bootstrap_servers(settings)],
        "broker_credentials": faust_credentials(settings),
    }


def from_faust_app(app: Any) -> dict[str, Any]:
    """aiokafka arguments for a plain client next to a Faust app (its restore consumer),
    taken from the app's own configuration so both always connect the same way."""
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    conf = app.conf
    return {
        "bootstrap_servers": [f"{url.host}:{url.port or 9092}" for url in conf.broker],
        **credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context),
    }


def describe(settings: Settings) -> str:
    """How we connect, for error messages and logs (never the password)."""
    text = f"{settings.kafka_bootstrap} ({settings.kafka_security_protocol}"
    if settings.kafka_security_protocol.startswith("SASL"):
        text += f", {settings.kafka_sasl_mechanism} as {settings.kafka_sasl_username!r}"
    return text + ")"
