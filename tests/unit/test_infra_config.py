"""The pure parts of deploy/local/infra.py: rendered configs, wire framing, jar cache logic.

Nothing here needs java or redis-server; the real processes are covered by
tests/integration/test_infra.py.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import stat
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support.infra import INFRA_SCRIPT, local_infra

props = local_infra.kafka_server_properties(9092, 9093, Path("/data/kafka"))


def test_server_properties_single_node_kraft_on_loopback() -> None:
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092"
    assert props["controller.listener.names"] == "CONTROLLER"
    for key in ("listeners", "advertised.listeners", "controller.quorum.voters"):
        assert "0.0.0.0" not in props[key] and "localhost" not in props[key]


def test_server_properties_suit_one_broker() -> None:
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"
    assert props["default.replication.factor"] == "1"
    assert props["min.insync.replicas"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["auto.create.topics.enable"] == "true"
    assert props["num.partitions"] == "4"
    assert props["log.dirs"] == "/data/kafka/kafka-logs"
    heartbeat = int(props["broker.heartbeat.interval.ms"])
    assert heartbeat < int(props["broker.session.timeout.ms"])


def test_render_properties_is_java_properties_text() -> None:
    text = local_infra.render_properties({"a.b": "1", "path": r"C:\x"}, header="hi\nthere")
    assert text == "# hi\n# there\na.b=1\npath=C:\\\\x\n"
    rendered = local_infra.render_properties(props)
    assert "listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093\n" in rendered


def test_log4j_logs_info_to_the_given_file() -> None:
    text = local_infra.kafka_log4j_properties(Path("/data/kafka/server.log"))
    lines = text.splitlines()
    assert "log4j.rootLogger=INFO, file" in lines
    assert "log4j.appender.file.File=/data/kafka/server.log" in lines
    assert "log4j.appender.file=org.apache.log4j.FileAppender" in lines


def test_java_command_small_heap_and_log4j() -> None:
    cmd = local_infra.kafka_java_command(
        "/usr/bin/java", Path("/c/libs"), "384m", Path("/d/log4j.properties"), Path("/d/s.props")
    )
    assert cmd[0] == "/usr/bin/java"
    assert {"-Xmx384m", "-Xms384m", "-XX:+UseSerialGC"} <= set(cmd)
    assert "-Dlog4j.configuration=file:/d/log4j.properties" in cmd
    assert cmd[cmd.index("-cp") + 1] == "/c/libs/*"
    assert cmd[-2:] == ["kafka.Kafka", "/d/s.props"]


def test_format_command() -> None:
    cmd = local_infra.kafka_format_command("java", Path("/c/libs"), "CID", Path("/d/s.props"))
    assert cmd[cmd.index("kafka.tools.StorageTool") :] == [
        "kafka.tools.StorageTool", "format", "-t", "CID", "-c", "/d/s.props",
    ]  # fmt: skip


def test_redis_command_loopback_no_persistence() -> None:
    cmd = local_infra.redis_command("redis-server", 6390, Path("/d"))
    pairs = dict(zip(cmd[1::2], cmd[2::2], strict=True))
    assert pairs == {
        "--port": "6390",
        "--bind": "127.0.0.1",
        "--dir": "/d",
        "--save": "",
        "--appendonly": "no",
        "--daemonize": "no",
    }


def test_durable_redis_fsyncs_every_write() -> None:
    """What the Redis state backend needs (docs/operations.md) and its tests run."""
    cmd = local_infra.redis_command("redis-server", 6390, Path("/d"), durable=True)
    pairs = dict(zip(cmd[1::2], cmd[2::2], strict=True))
    assert (pairs["--appendonly"], pairs["--appendfsync"]) == ("yes", "always")


def test_cluster_id_is_16_bytes_urlsafe_base64() -> None:
    cid = local_infra.new_cluster_id()
    assert len(cid) == 22 and "=" not in cid
    assert len(base64.urlsafe_b64decode(cid + "==")) == 16
    assert cid != local_infra.new_cluster_id()


# --------------------------------------------------------------------------- wire framing


def test_encode_request_framing() -> None:
    frame = local_infra.encode_kafka_request(18, 0, 7, b"", client_id="ab")
    assert frame == struct.pack(">ihhih", 12, 18, 0, 7, 2) + b"ab"


def test_parse_api_versions_v0() -> None:
    payload = (
        struct.pack(">ihi", 5, 0, 2) + struct.pack(">hhh", 3, 0, 12) + struct.pack(">hhh", 18, 0, 3)
    )
    assert local_infra.parse_api_versions_v0(payload, 5) == {3: (0, 12), 18: (0, 3)}
    with pytest.raises(ValueError, match="correlation"):
        local_infra.parse_api_versions_v0(payload, 6)
    with pytest.raises(ValueError, match="error code 35"):
        local_infra.parse_api_versions_v0(struct.pack(">ihi", 5, 35, 0), 5)
    with pytest.raises(ValueError, match="truncated"):
        local_infra.parse_api_versions_v0(payload[:-2], 5)


def test_parse_metadata_v4_brokers() -> None:
    host = b"127.0.0.1"
    payload = (
        struct.pack(">iii", 2, 0, 2)
        + struct.pack(">ih", 1, len(host)) + host + struct.pack(">ih", 9092, -1)
        + struct.pack(">ih", 2, len(host)) + host + struct.pack(">ih", 9094, 2) + b"r1"
        + struct.pack(">h", -1) + struct.pack(">i", 1) + struct.pack(">i", 0)
    )  # fmt: skip
    assert local_infra.parse_metadata_v4_brokers(payload, 2) == [
        (1, "127.0.0.1", 9092),
        (2, "127.0.0.1", 9094),
    ]
    assert local_infra.encode_metadata_v4_body() == b"\x00\x00\x00\x00\x00"


def test_checks_are_false_when_nothing_listens() -> None:
    port = local_infra.free_port()
    assert not local_infra.kafka_answers("127.0.0.1", port, timeout=1)
    assert not local_infra.redis_answers("127.0.0.1", port, timeout=1)


# --------------------------------------------------------------------------- ports, pids


def test_free_ports_distinct_and_bindable() -> None:
    ports = local_infra.free_ports(5)
    assert len(set(ports)) == 5
    assert not any(local_infra.port_in_use(p) for p in ports)


def test_port_in_use_detects_listener() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert local_infra.port_in_use(sock.getsockname()[1])


def test_start_refuses_a_busy_port(tmp_path: Path) -> None:
    """Fails fast, before any java/redis process, rather than racing another server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        busy = sock.getsockname()[1]
        with pytest.raises(RuntimeError, match="already in use"):
            local_infra.RedisServer(busy, tmp_path / "r").start()
        with pytest.raises(RuntimeError, match="already in use"):
            local_infra.KafkaBroker(busy, local_infra.free_port(), tmp_path / "k").start()


def test_stale_pid_file_is_not_adopted(tmp_path: Path) -> None:
    """A pid file naming some unrelated live process must never lead to signalling it."""
    broker = local_infra.KafkaBroker(1, 2, tmp_path)
    broker.pid_file.write_text(f"{os.getpid()}\n")
    assert broker.pid is None
    broker.stop()  # must not signal us
    assert not broker.pid_file.exists()


def test_pid_alive() -> None:
    assert local_infra.pid_alive(os.getpid())
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: a zombie
    assert not local_infra.pid_alive(proc.pid)
    proc.wait()
    assert not local_infra.pid_alive(proc.pid)


# --------------------------------------------------------------------------- env, cache


def test_infra_config_defaults_and_overrides(tmp_path: Path) -> None:
    cfg = local_infra.InfraConfig.from_env({})
    assert (cfg.kafka_port, cfg.kafka_controller_port, cfg.redis_port) == (9092, 9093, 6379)
    assert cfg.infra_dir == Path("var/infra").resolve()
    assert cfg.kafka_heap == "384m"
    cfg = local_infra.InfraConfig.from_env(
        {
            "MSGSTATUS_KAFKA_PORT": "19092",
            "MSGSTATUS_KAFKA_CONTROLLER_PORT": "19093",
            "MSGSTATUS_REDIS_PORT": "16379",
            "MSGSTATUS_INFRA_DIR": str(tmp_path),
        }
    )
    assert cfg.kafka().bootstrap == "127.0.0.1:19092"
    assert cfg.redis().url == "redis://127.0.0.1:16379/0"
    assert cfg.kafka().data_dir == tmp_path / "kafka"
    with pytest.raises(ValueError, match="MSGSTATUS_REDIS_PORT"):
        local_infra.InfraConfig.from_env({"MSGSTATUS_REDIS_PORT": "redis"})
    with pytest.raises(ValueError, match="out of range"):
        local_infra.InfraConfig.from_env({"MSGSTATUS_KAFKA_PORT": "70000"})


def test_cache_dir_override(tmp_path: Path) -> None:
    assert local_infra.kafka_cache_dir({"MSGSTATUS_CACHE_DIR": str(tmp_path)}) == (
        tmp_path / f"kafka-{local_infra.KAFKA_VERSION}"
    )
    assert local_infra.cache_root({}) == Path.home() / ".cache" / "msgstatus"


def test_cli_status_when_nothing_runs(tmp_path: Path) -> None:
    kafka_port, controller_port, redis_port = local_infra.free_ports(3)
    env = dict(
        os.environ,
        MSGSTATUS_INFRA_DIR=str(tmp_path),
        MSGSTATUS_KAFKA_PORT=str(kafka_port),
        MSGSTATUS_KAFKA_CONTROLLER_PORT=str(controller_port),
        MSGSTATUS_REDIS_PORT=str(redis_port),
    )
    result = subprocess.run(
        [sys.executable, str(INFRA_SCRIPT), "status"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 3
    assert "kafka: not running" in result.stdout
    assert "redis: not running" in result.stdout
    bad = subprocess.run(
        [sys.executable, str(INFRA_SCRIPT), "up"],
        env=dict(env, MSGSTATUS_KAFKA_PORT="nope"),
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "MSGSTATUS_KAFKA_PORT" in bad.stderr


# A stand-in for `mvn` that only copies one file: exercises the marker and the lock,
# which the real fetch (network, ~15 s) cannot do cheaply.  It logs each invocation.
FAKE_MVN = textwrap.dedent(
    """\
    #!/bin/sh
    echo run >> "$FAKE_MVN_LOG"
    [ -n "$FAKE_MVN_FAIL" ] && { echo "boom" >&2; exit 3; }
    sleep 0.5
    for arg in "$@"; do
      case "$arg" in -DoutputDirectory=*) out="${arg#-DoutputDirectory=}";; esac
    done
    mkdir -p "$out" && touch "$out/kafka_2.13-3.9.1.jar" "$out/kafka-clients-3.9.1.jar"
    """
)


@pytest.fixture
def fake_mvn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    mvn = bindir / "mvn"
    mvn.write_text(FAKE_MVN)
    mvn.chmod(mvn.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "mvn.log"
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_MVN_LOG", str(log))
    monkeypatch.setenv("MSGSTATUS_CACHE_DIR", str(tmp_path / "cache"))
    return log


def test_jar_fetch_runs_once_and_writes_marker_last(fake_mvn: Path) -> None:
    libs = local_infra.ensure_kafka_jars()
    assert libs == local_infra.kafka_cache_dir() / "libs"
    assert (libs / "kafka_2.13-3.9.1.jar").exists()
    marker = libs.parent / ".complete"
    assert marker.read_text() == local_infra.jar_marker_text()
    assert local_infra.ensure_kafka_jars() == libs
    assert fake_mvn.read_text().count("run") == 1

    marker.unlink()  # an incomplete earlier fetch: fetch again, replacing libs
    (libs / "stale.jar").touch()
    local_infra.ensure_kafka_jars()
    assert fake_mvn.read_text().count("run") == 2
    assert not (libs / "stale.jar").exists()


def test_jar_fetch_failure_leaves_no_marker(
    fake_mvn: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MVN_FAIL", "1")
    with pytest.raises(RuntimeError, match=r"(?s)mvn exit 3.*boom"):
        local_infra.ensure_kafka_jars()
    assert not (local_infra.kafka_cache_dir() / ".complete").exists()
    assert not (local_infra.kafka_cache_dir() / "libs").exists()


def test_parallel_jar_fetches_share_one_download(fake_mvn: Path) -> None:
    code = (
        f"import sys; sys.path.insert(0, {str(INFRA_SCRIPT.parent)!r}); "
        "import infra; print(infra.ensure_kafka_jars())"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = {proc.communicate(timeout=60)[0].strip() for proc in procs}
    assert all(proc.returncode == 0 for proc in procs)
    assert outputs == {str(local_infra.kafka_cache_dir() / "libs")}
    assert fake_mvn.read_text().count("run") == 1


# --------------------------------------------------------------------------- CLI parsing


def test_cli_parses_every_command_and_rejects_others(capsys: pytest.CaptureFixture[str]) -> None:
    parser = local_infra.build_parser()
    for command in ("up", "down", "status", "prepare"):
        assert parser.parse_args([command]).command == command
    assert set(local_infra.COMMANDS) == {"up", "down", "status", "prepare"}
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["start"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_prepare_fetches_checks_installs_and_starts_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(local_infra, "ensure_kafka_jars", lambda: calls.append("jars") or tmp_path)
    monkeypatch.setattr(local_infra, "ensure_java", lambda: calls.append("java") or "/bin/java")
    monkeypatch.setattr(
        local_infra, "ensure_redis_server", lambda: calls.append("redis") or "/bin/redis-server"
    )
    monkeypatch.setattr(
        local_infra,
        "ensure_prometheus",
        lambda: calls.append("prometheus") or ("/bin/prometheus", "/bin/promtool"),
    )

    def no_start(self: object) -> None:
        raise AssertionError("prepare must not start anything")

    monkeypatch.setattr(local_infra._ManagedProcess, "start", no_start)
    cfg = local_infra.InfraConfig.from_env({"MSGSTATUS_INFRA_DIR": str(tmp_path)})
    assert local_infra.cmd_prepare(cfg) == 0
    assert calls == ["jars", "java", "redis", "prometheus"]
    out = capsys.readouterr().out
    assert "nothing started" in out and "promtool: /bin/promtool" in out

    def missing() -> str:
        raise RuntimeError("'java' (17+) is needed")

    monkeypatch.setattr(local_infra, "ensure_java", missing)
    assert local_infra.cmd_prepare(cfg) == 1
    assert "infra prepare failed: 'java' (17+) is needed" in capsys.readouterr().err


def test_prometheus_command_loopback_own_tsdb_reloadable() -> None:
    cmd = local_infra.prometheus_command(
        "/usr/bin/prometheus", 19090, Path("/d/prometheus.yml"), Path("/d")
    )
    assert cmd[0] == "/usr/bin/prometheus"
    assert "--web.listen-address=127.0.0.1:19090" in cmd
    assert "--config.file=/d/prometheus.yml" in cmd
    assert "--storage.tsdb.path=/d/tsdb" in cmd
    assert "--web.enable-lifecycle" in cmd
    assert not any("0.0.0.0" in part for part in cmd)


def test_prometheus_config_is_written_as_json_yaml(tmp_path: Path) -> None:
    server = local_infra.PrometheusServer(local_infra.free_port(), tmp_path, {"a": {"b": [1]}})
    server._write_config()
    assert json.loads(server.config_file.read_text()) == {"a": {"b": [1]}}
    assert server.url == f"http://127.0.0.1:{server.port}"
    assert not server.answers()


def test_apt_install_without_root_names_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        local_infra.shutil, "which", lambda name: "/usr/bin/apt-get" if name == "apt-get" else None
    )
    monkeypatch.setattr(local_infra, "_installed", lambda name: None)
    monkeypatch.setattr(local_infra.os, "geteuid", lambda: 1000)
    ran: list[object] = []
    monkeypatch.setattr(local_infra.subprocess, "run", lambda *a, **k: ran.append(a))
    with pytest.raises(RuntimeError) as exc:
        local_infra.apt_install("prometheus", ["prometheus", "promtool"])
    message = str(exc.value)
    assert "prometheus, promtool not on PATH" in message
    assert "apt-get install -y --no-install-recommends prometheus" in message
    assert ran == []


def test_apt_install_as_root_runs_apt_without_starting_services(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    installed: set[str] = set()
    policy = tmp_path / "policy-rc.d"
    monkeypatch.setattr(local_infra, "POLICY_RC_D", policy)
    monkeypatch.setattr(
        local_infra.shutil, "which", lambda name: "/usr/bin/apt-get" if name == "apt-get" else None
    )
    monkeypatch.setattr(
        local_infra, "_installed", lambda name: f"/usr/bin/{name}" if name in installed else None
    )
    monkeypatch.setattr(local_infra.os, "geteuid", lambda: 0)
    seen: list[tuple[list[str], bool]] = []

    def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
        seen.append((cmd, policy.exists() and "exit 101" in policy.read_text()))
        if "install" in cmd:
            installed.update({"prometheus", "promtool"})
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(local_infra.subprocess, "run", run)
    assert local_infra.ensure_prometheus() == ("/usr/bin/prometheus", "/usr/bin/promtool")
    assert [cmd[1:] for cmd, _ in seen] == [
        ["update"],
        ["install", "-y", "--no-install-recommends", "prometheus"],
    ]
    assert all(blocked for _, blocked in seen), "services must not start during the install"
    assert not policy.exists(), "the temporary policy-rc.d is removed again"


def test_sasl_listener_added_next_to_plaintext() -> None:
    sasl = local_infra.sasl_listener_properties(props, 9094, {"app": "pw1", "ops": "pw2"})
    assert sasl["listeners"] == (
        "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093,SASL_PLAINTEXT://127.0.0.1:9094"
    )
    assert sasl["advertised.listeners"].endswith(",SASL_PLAINTEXT://127.0.0.1:9094")
    assert "SASL_PLAINTEXT:SASL_PLAINTEXT" in sasl["listener.security.protocol.map"]
    assert sasl["inter.broker.listener.name"] == "PLAINTEXT"
    assert sasl["sasl.enabled.mechanisms"] == "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512"
    plain = sasl["listener.name.sasl_plaintext.plain.sasl.jaas.config"]
    assert 'user_app="pw1" user_ops="pw2";' in plain
    assert "ScramLoginModule" in sasl["listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config"]
    assert props["listeners"].count("SASL") == 0  # the input is not modified
    with pytest.raises(ValueError):
        local_infra.sasl_listener_properties(props, 9094, {"app": 'pw"; x'})


def test_scram_users_are_created_when_storage_is_formatted() -> None:
    args = local_infra.scram_format_args({"app": "pw1"})
    assert args == [
        "--add-scram", "SCRAM-SHA-256=[name=app,password=pw1]",
        "--add-scram", "SCRAM-SHA-512=[name=app,password=pw1]",
    ]  # fmt: skip
    cmd = local_infra.kafka_format_command("java", Path("/l"), "id", Path("/s.props"), args)
    assert cmd[-4:] == args
    add = local_infra.scram_user_command(
        "java", Path("/l"), "127.0.0.1:9092", "u", "p", "SCRAM-SHA-512"
    )
    assert "kafka.admin.ConfigCommand" in add and "SCRAM-SHA-512=[password=p]" in add
