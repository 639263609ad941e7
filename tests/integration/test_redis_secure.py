"""The read model over TLS (rediss://) with an ACL user and password, as configured by
MSGSTATUS_REDIS_* settings: a real redis-server with only a TLS port and no default user."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.infra import local_infra
from support.tls import Pki, make_pki

from processors.config import Settings
from processors.store.readmodel import Batch, ReadModel, ReadModelUnavailable

pytestmark = pytest.mark.integration

USER, PASSWORD = "msgstatus", "redispw123"


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Pki]]:
    tmp = tmp_path_factory.mktemp("redis-tls")
    pki = make_pki(tmp / "pki")
    port = local_infra.free_port()
    cmd = [
        local_infra.ensure_redis_server(), "--port", "0", "--tls-port", str(port),
        "--bind", "127.0.0.1", "--dir", str(tmp), "--save", "", "--appendonly", "no",
        "--tls-cert-file", str(pki.server_cert), "--tls-key-file", str(pki.server_key),
        "--tls-ca-cert-file", str(pki.ca), "--tls-auth-clients", "optional",
        "--user", "default", "off",
        "--user", USER, "on", f">{PASSWORD}", "~*", "&*", "+@all",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not local_infra.port_in_use(port):
            assert proc.poll() is None and time.monotonic() < deadline, "redis-server failed"
            time.sleep(0.1)
        yield port, pki
    finally:
        proc.terminate()
        proc.wait(10)


def settings(port: int, pki: Pki, **env: str) -> Settings:
    return Settings.from_env(
        {
            "MSGSTATUS_REDIS_URL": f"rediss://127.0.0.1:{port}/0",
            "MSGSTATUS_REDIS_USERNAME": USER,
            "MSGSTATUS_REDIS_PASSWORD": PASSWORD,
            "MSGSTATUS_REDIS_SSL_CA_FILE": str(pki.ca),
            "MSGSTATUS_TOPIC_PREFIX": "tls.",
            **env,
        }
    )


DOC = {"message_key": "crm:tls-1", "sequence": 1, "status": "sent"}


def one_document() -> Batch:
    batch = Batch(offsets={"tls.message.status:0": 1}, expected={"tls.message.status:0": None})
    batch.message(DOC["message_key"]).doc = DOC
    return batch


async def test_read_model_over_tls_with_an_acl_user(tls_redis) -> None:
    port, pki = tls_redis
    model = ReadModel.from_settings(settings(port, pki))
    try:
        assert await model.ping()
        assert await model.apply(one_document(), retention=60.0, now=time.time()) == []
        assert (await model.get("crm:tls-1"))["status"] == "sent"
    finally:
        await model.close()


async def test_wrong_password_or_unknown_ca_is_refused(tls_redis, tmp_path: Path) -> None:
    port, pki = tls_redis
    for config in (
        settings(port, pki, MSGSTATUS_REDIS_PASSWORD="wrong"),
        settings(port, pki, MSGSTATUS_REDIS_SSL_CA_FILE=str(make_pki(tmp_path / "other").ca)),
    ):
        model = ReadModel.from_settings(config)
        try:
            assert not await model.ping()
            with pytest.raises(ReadModelUnavailable):
                await model.get("crm:tls-1")
        finally:
            await model.close()


async def test_credentials_in_the_url_work_too(tls_redis) -> None:
    port, pki = tls_redis
    url = f"rediss://{USER}:{PASSWORD}@127.0.0.1:{port}/0"
    config = Settings.from_env(
        {"MSGSTATUS_REDIS_URL": url, "MSGSTATUS_REDIS_SSL_CA_FILE": str(pki.ca)}
    )
    model = ReadModel.from_settings(config)
    try:
        assert await model.ping()
    finally:
        await model.close()


async def test_redis_state_backend_over_tls_with_an_acl_user(tls_redis) -> None:
    """MSGSTATUS_STATE_BACKEND=redis uses the same TLS and ACL settings as the read model."""
    from processors.model import CanonicalEvent
    from processors.store.state import Wiring
    from processors.store.state.redis import RedisBackend
    from processors.stream.fence import Lease, Ownership
    from processors.stream.ordering import order_record

    port, pki = tls_redis
    backend = RedisBackend(
        settings(port, pki, MSGSTATUS_STATE_BACKEND="redis", MSGSTATUS_REDIS_POOL_SIZE="2")
    )
    ownership = Ownership()
    ownership.assign({"in0"})
    table = backend.table("ordering", Wiring(None, 1, None, ownership, Lease(10.0)))  # type: ignore[arg-type]
    table.assigned({0}, 1)
    event = CanonicalEvent(
        provider="crm",
        provider_message_id="tls-2",
        status="sent",
        provider_status="sent",
        channel="sms",
        observed_at=1.8e9,
    ).to_dict()
    try:
        assert await backend.ping()
        items = await table.transact(
            ownership.token("in0"), 0, lambda b: order_record(b, [event], 1)
        )
        assert [i["o"] for i in items] == ["applied"]
        assert await table.size({0}) == 1
    finally:
        await backend.close()
