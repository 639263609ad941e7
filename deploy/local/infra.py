#!/usr/bin/env python3
"""Real local Kafka (KRaft) and Redis without Docker: fetch, start, check, stop.

Used both as a CLI (``python deploy/local/infra.py up|down|status|prepare``, behind
``make infra-up``/``infra-down``) and as a module imported by the test suite, which
starts its own instances on free ports.  Standard library only, so it runs before the
project's virtual environment exists.  Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

KAFKA_VERSION = "3.9.1"
HOST = "127.0.0.1"
POM_PATH = Path(__file__).resolve().parent / "pom.xml"
KAFKA_STARTED_LINE = "Kafka Server started"

ENV_CACHE_DIR = "MSGSTATUS_CACHE_DIR"
ENV_INFRA_DIR = "MSGSTATUS_INFRA_DIR"
ENV_KAFKA_PORT = "MSGSTATUS_KAFKA_PORT"
ENV_KAFKA_CONTROLLER_PORT = "MSGSTATUS_KAFKA_CONTROLLER_PORT"
ENV_KAFKA_HEAP = "MSGSTATUS_KAFKA_HEAP"
ENV_REDIS_PORT = "MSGSTATUS_REDIS_PORT"


def _say(message: str) -> None:
    """Progress goes to stderr so stdout stays parseable."""
    print(f"[infra] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- ports


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct currently-free TCP ports on 127.0.0.1.

    All sockets are held open until every port is chosen so the kernel cannot hand
    out the same port twice.
    """
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def free_port() -> int:
    """Return a currently-free TCP port on 127.0.0.1 (bind to port 0)."""
    return free_ports(1)[0]


def port_in_use(port: int) -> bool:
    """True if something listens on 127.0.0.1:port.

    Binds with SO_REUSEADDR like Kafka and Redis do, so TIME_WAIT leftovers of a
    previous run on the same port do not count as "in use".
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return True
    return False


# --------------------------------------------------------------------------- jars


def cache_root(env: Mapping[str, str] | None = None) -> Path:
    """Base cache directory: ``$MSGSTATUS_CACHE_DIR`` or ``~/.cache/msgstatus``."""
    env = os.environ if env is None else env
    override = env.get(ENV_CACHE_DIR)
    if override:
        return Path(override).expanduser().resolve()
    return Path.home() / ".cache" / "msgstatus"


def kafka_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """Versioned directory holding ``libs/`` and the completion marker."""
    return cache_root(env) / f"kafka-{KAFKA_VERSION}"


def jar_marker_text(pom: Path = POM_PATH) -> str:
    """Marker content; includes the pom's hash so editing the pom forces a re-fetch."""
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    return f"kafka={KAFKA_VERSION}\npom-sha256={digest}\n"


def _jars_complete(base: Path, expected: str) -> bool:
    marker = base / ".complete"
    libs = base / "libs"
    try:
        if marker.read_text() != expected:
            return False
    except OSError:
        return False
    return any(libs.glob("kafka_2.13-*.jar"))


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock so parallel processes (xdist, make) fetch only once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _say(f"waiting for another process holding {path}")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_kafka_jars(pom: Path = POM_PATH) -> Path:
    """Return the directory of Kafka broker jars, fetching them with Maven once.

    The jars land in ``<cache>/kafka-<version>/libs``; a marker written only after a
    successful, complete fetch makes later calls free.  Fetching goes to a scratch
    directory first and is swapped in, so a failed or interrupted fetch never leaves a
    half-filled ``libs`` behind a valid marker.
    """
    base = kafka_cache_dir()
    libs = base / "libs"
    expected = jar_marker_text(pom)
    if _jars_complete(base, expected):
        return libs
    with _file_lock(base / ".lock"):
        if _jars_complete(base, expected):  # another process fetched while we waited
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise RuntimeError(
                "Maven ('mvn') is needed once to fetch the Kafka jars but is not on PATH; "
                "install it (e.g. `apt-get install -y maven`)"
            )
        scratch = base / "libs.partial"
        shutil.rmtree(scratch, ignore_errors=True)
        _say(f"fetching Kafka {KAFKA_VERSION} jars with Maven into {libs} (one time)")
        started = time.monotonic()
        cmd = [
            mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
            "-DincludeScope=runtime", f"-DoutputDirectory={scratch}",
        ]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0 or not any(scratch.glob("kafka_2.13-*.jar")):
            output = (result.stdout + result.stderr).strip().splitlines()[-30:]
            raise RuntimeError(
                f"fetching Kafka jars failed (mvn exit {result.returncode}):\n" + "\n".join(output)
            )
        (base / ".complete").unlink(missing_ok=True)
        if libs.exists():
            old = base / f"libs.old-{os.getpid()}"
            libs.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        scratch.rename(libs)
        tmp_marker = base / ".complete.tmp"
        tmp_marker.write_text(expected)
        os.replace(tmp_marker, base / ".complete")
        _say(f"Kafka jars ready in {time.monotonic() - started:.1f}s")
    return libs


def ensure_java() -> str:
    """Return the ``java`` executable or explain how to get one."""
    java = shutil.which("java")
    if java is None:
        raise RuntimeError(
            "'java' (17+) is needed for the local Kafka broker but is not on PATH; "
            "install it (e.g. `apt-get install -y openjdk-17-jre-headless`)"
        )
    return java


POLICY_RC_D = Path("/usr/sbin/policy-rc.d")


@contextlib.contextmanager
def _no_service_starts() -> Iterator[None]:
    """Keep dpkg from starting the packages' system services while we install them.

    Debian's redis-server and prometheus packages start a system service on install
    (redis on 127.0.0.1:6379, the port `infra.py up` wants; Prometheus on *:9090 scraping
    a node exporter); we only want the binaries. policy-rc.d exit 101 = "not allowed",
    the convention container images use. An existing policy file is left alone.
    """
    if POLICY_RC_D.exists():
        yield
        return
    try:
        POLICY_RC_D.write_text(
            "#!/bin/sh\n# written by msgstatus deploy/local/infra.py\nexit 101\n"
        )
        POLICY_RC_D.chmod(0o755)
    except OSError:  # not root: apt-get would fail anyway, with its own message
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            POLICY_RC_D.unlink()


def _installed(binary: str) -> str | None:
    found = shutil.which(binary)
    if found:
        return found
    candidate = f"/usr/bin/{binary}"
    return candidate if os.access(candidate, os.X_OK) else None


def apt_install(package: str, binaries: Sequence[str]) -> dict[str, str]:
    """Install Debian's ``package`` (no recommends, no service start) unless every one of
    ``binaries`` is already on PATH; return their paths.

    Only root can install: anyone else gets the command to run instead.
    """
    found = {name: _installed(name) for name in binaries}
    if all(found.values()):
        return {name: path for name, path in found.items() if path}
    missing = ", ".join(name for name, path in found.items() if not path)
    how = f"`sudo apt-get install -y --no-install-recommends {package}`"
    apt = shutil.which("apt-get")
    if apt is None:
        raise RuntimeError(f"{missing} not on PATH and apt-get is unavailable; install {package}")
    if os.geteuid() != 0:
        raise RuntimeError(
            f"{missing} not on PATH; installing Debian's {package} package needs root: run {how} "
            "(or `make test` as root)"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    with _no_service_starts():
        for cmd in (
            [apt, "update"],
            [apt, "install", "-y", "--no-install-recommends", package],
        ):
            _say("running " + " ".join(cmd))
            result = subprocess.run(cmd, env=env, stdout=sys.stderr, check=False)
            if result.returncode != 0:
                raise RuntimeError(
                    f"installing {package} failed: `{' '.join(cmd)}` exited "
                    f"{result.returncode}; install it manually ({how})"
                )
    found = {name: _installed(name) for name in binaries}
    still = [name for name, path in found.items() if not path]
    if still:
        raise RuntimeError(f"{package} was installed but {', '.join(still)} is still not on PATH")
    return {name: path for name, path in found.items() if path}


def ensure_redis_server() -> str:
    """Return the ``redis-server`` executable, installing Debian's package if missing."""
    return apt_install("redis-server", ["redis-server"])["redis-server"]


def ensure_prometheus() -> tuple[str, str]:
    """Return ``(prometheus, promtool)``, installing Debian's package (it has both)."""
    found = apt_install("prometheus", ["prometheus", "promtool"])
    return found["prometheus"], found["promtool"]


# --------------------------------------------------------------------------- config rendering


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (22 chars)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


def kafka_server_properties(port: int, controller_port: int, data_dir: Path) -> dict[str, str]:
    """Broker settings for a single-node, loopback-only KRaft broker+controller."""
    segment = str(16 * 1024 * 1024)
    return {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{HOST}:{controller_port}",
        "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir / "kafka-logs"),
        "num.partitions": "4",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "8",
        "offsets.topic.segment.bytes": segment,
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "transaction.state.log.segment.bytes": segment,
        "group.initial.rebalance.delay.ms": "0",
        # After a crash (kill()) the old registration blocks the restarted broker until
        # its session expires; the 9 s default made crash-restart tests slow.
        "broker.session.timeout.ms": "4000",
        "broker.heartbeat.interval.ms": "1000",
        "auto.create.topics.enable": "true",
        "delete.topic.enable": "true",
        "log.segment.bytes": segment,
        "log.index.size.max.bytes": str(1024 * 1024),
        "log.retention.hours": "168",
        "num.network.threads": "2",
        "num.io.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
    }


SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_SASL_NAME = "SASL_PLAINTEXT"


def sasl_listener_properties(
    props: Mapping[str, str], sasl_port: int, users: Mapping[str, str]
) -> dict[str, str]:
    """``props`` plus a SASL_PLAINTEXT client listener on 127.0.0.1:``sasl_port``
    accepting PLAIN and SCRAM-SHA-256/512 for ``users`` (name -> password).

    The broker talks to itself over PLAINTEXT; the SCRAM credentials live in the cluster
    metadata (``kafka_format_command`` adds them; ``KafkaBroker.add_scram_user`` later).
    No authorizer: this checks authentication, the part msgstatus' clients configure.
    """
    for name, password in users.items():
        if not name.isidentifier() or not password.isalnum():
            raise ValueError("SASL test users: identifier names and alphanumeric passwords")
    out = dict(props)
    out["listeners"] += f",{_SASL_NAME}://{HOST}:{sasl_port}"
    out["advertised.listeners"] += f",{_SASL_NAME}://{HOST}:{sasl_port}"
    out["listener.security.protocol.map"] += f",{_SASL_NAME}:{_SASL_NAME}"
    out["sasl.enabled.mechanisms"] = ",".join(SASL_MECHANISMS)
    plain_users = " ".join(f'user_{name}="{password}"' for name, password in users.items())
    prefix = f"listener.name.{_SASL_NAME.lower()}"
    out[f"{prefix}.plain.sasl.jaas.config"] = (
        f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};"
    )
    for mechanism in SASL_MECHANISMS[1:]:
        out[f"{prefix}.{mechanism.lower()}.sasl.jaas.config"] = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        )
    return out


def scram_format_args(users: Mapping[str, str]) -> list[str]:
    """``kafka-storage format --add-scram`` arguments: every user, both SCRAM mechanisms."""
    args: list[str] = []
    for name, password in users.items():
        for mechanism in SASL_MECHANISMS[1:]:
            args += ["--add-scram", f"{mechanism}=[name={name},password={password}]"]
    return args


def render_properties(props: Mapping[str, str], header: str = "") -> str:
    """Java ``.properties`` text; escapes backslashes so paths survive."""
    lines = [f"# {line}" for line in header.splitlines()]
    lines += [f"{key}={value.replace(chr(92), chr(92) * 2)}" for key, value in props.items()]
    return "\n".join(lines) + "\n"


def kafka_log4j_properties(log_file: Path) -> str:
    """log4j 1.x config (reload4j binding) sending INFO to one file in the data dir."""
    return render_properties(
        {
            "log4j.rootLogger": "INFO, file",
            "log4j.appender.file": "org.apache.log4j.FileAppender",
            "log4j.appender.file.File": str(log_file),
            "log4j.appender.file.Append": "true",
            "log4j.appender.file.layout": "org.apache.log4j.PatternLayout",
            "log4j.appender.file.layout.ConversionPattern": "[%d] %p %m (%c)%n",
            "log4j.logger.kafka.request.logger": "WARN",
            "log4j.logger.state.change.logger": "WARN",
            "log4j.logger.org.apache.kafka.clients": "WARN",
        },
        header="generated by deploy/local/infra.py",
    )


def kafka_java_command(
    java: str, libs: Path, heap: str, log4j_file: Path, server_properties: Path
) -> list[str]:
    """The broker JVM command line (small fixed heap, serial GC: it is a dev box)."""
    return [
        java, f"-Xmx{heap}", f"-Xms{heap}", "-XX:+UseSerialGC",
        "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
        f"-Dlog4j.configuration=file:{log4j_file}",
        "-cp", f"{libs}/*", "kafka.Kafka", str(server_properties),
    ]  # fmt: skip


def kafka_format_command(
    java: str,
    libs: Path,
    cluster_id: str,
    server_properties: Path,
    extra: Sequence[str] = (),
) -> list[str]:
    """The one-time KRaft storage format command (``extra``: e.g. ``--add-scram`` users)."""
    return [
        java, "-Xmx256m", "-XX:+UseSerialGC", "-cp", f"{libs}/*",
        "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(server_properties),
        *extra,
    ]  # fmt: skip


def scram_user_command(
    java: str, libs: Path, bootstrap: str, name: str, password: str, mechanism: str
) -> list[str]:
    """kafka-configs: add or change a SCRAM user on a running cluster."""
    return [
        java, "-Xmx256m", "-XX:+UseSerialGC", "-cp", f"{libs}/*",
        "kafka.admin.ConfigCommand", "--bootstrap-server", bootstrap, "--alter",
        "--add-config", f"{mechanism}=[password={password}]",
        "--entity-type", "users", "--entity-name", name,
    ]  # fmt: skip


def redis_command(redis_server: str, port: int, data_dir: Path, durable: bool = False) -> list[str]:
    """redis-server flags: loopback only, foreground, no persistence (a scratch cache);
    ``durable``: every write in an append-only file fsynced before Redis answers, as the
    Redis state backend needs (docs/operations.md)."""
    aof = ["--appendonly", "yes", "--appendfsync", "always"] if durable else ["--appendonly", "no"]
    return [
        redis_server, "--port", str(port), "--bind", HOST, "--dir", str(data_dir),
        "--save", "", *aof, "--daemonize", "no",
    ]  # fmt: skip


# --------------------------------------------------------------------------- wire checks


def encode_kafka_request(
    api_key: int, api_version: int, correlation_id: int, body: bytes = b"", client_id: str = "infra"
) -> bytes:
    """Size-prefixed Kafka request with a v1 (non-flexible) header."""
    cid = client_id.encode()
    header = struct.pack(">hhih", api_key, api_version, correlation_id, len(cid)) + cid
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


API_VERSIONS = 18
METADATA = 3


def parse_api_versions_v0(payload: bytes, correlation_id: int) -> dict[int, tuple[int, int]]:
    """Parse an ApiVersions v0 response body (after the size prefix).

    Returns ``{api_key: (min_version, max_version)}``; raises ValueError on anything
    that is not a successful answer to our request.
    """
    cid, error, count = struct.unpack_from(">ihi", payload, 0)
    if cid != correlation_id:
        raise ValueError(f"correlation id {cid} != {correlation_id}")
    if error != 0:
        raise ValueError(f"ApiVersions error code {error}")
    if count < 0 or len(payload) < 10 + 6 * count:
        raise ValueError("truncated ApiVersions response")
    versions = {}
    for i in range(count):
        key, lo, hi = struct.unpack_from(">hhh", payload, 10 + 6 * i)
        versions[key] = (lo, hi)
    return versions


def encode_metadata_v4_body() -> bytes:
    """Metadata v4: no topics (empty array), no auto-creation; we only want brokers."""
    return struct.pack(">i?", 0, False)


def parse_metadata_v4_brokers(payload: bytes, correlation_id: int) -> list[tuple[int, str, int]]:
    """Parse the broker list of a Metadata v4 response: ``[(node_id, host, port)]``."""
    cid, _throttle, count = struct.unpack_from(">iii", payload, 0)
    if cid != correlation_id:
        raise ValueError(f"correlation id {cid} != {correlation_id}")
    offset = 12
    brokers = []
    for _ in range(count):
        node_id, host_len = struct.unpack_from(">ih", payload, offset)
        offset += 6
        host = payload[offset : offset + host_len].decode()
        offset += host_len
        (port, rack_len) = struct.unpack_from(">ih", payload, offset)
        offset += 6 + max(rack_len, 0)
        brokers.append((node_id, host, port))
    return brokers


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed mid-response")
        chunks += chunk
    return bytes(chunks)


def _kafka_roundtrip(sock: socket.socket, request: bytes) -> bytes:
    sock.sendall(request)
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    return _recv_exact(sock, size)


def kafka_answers(host: str, port: int, timeout: float = 2.0) -> bool:
    """True if a Kafka broker there answers ApiVersions and lists itself in Metadata.

    ApiVersions alone is answered as soon as the socket server is up; a broker in
    Metadata means it is registered and unfenced, i.e. clients can actually use it.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            payload = _kafka_roundtrip(sock, encode_kafka_request(API_VERSIONS, 0, 1))
            versions = parse_api_versions_v0(payload, 1)
            lo, hi = versions.get(METADATA, (99, -1))
            if not lo <= 4 <= hi:
                return False
            req = encode_kafka_request(METADATA, 4, 2, encode_metadata_v4_body())
            return bool(parse_metadata_v4_brokers(_kafka_roundtrip(sock, req), 2))
    except (OSError, ValueError, struct.error):
        return False


def redis_answers(host: str, port: int, timeout: float = 2.0) -> bool:
    """True if a Redis server there answers PING with PONG."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = sock.recv(64)
                if not chunk:
                    return False
                reply += chunk
            return reply == b"+PONG\r\n"
    except OSError:
        return False


# --------------------------------------------------------------------------- processes


def pid_alive(pid: int) -> bool:
    """True if pid exists and is not a zombie (a dead child not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _pid_cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _die_with_parent_hook() -> Callable[[], None]:
    """A preexec hook making the child get SIGKILL when its parent thread dies.

    Lets tests guarantee no broker outlives a SIGKILLed pytest.  libc is resolved
    here, before fork, so the child only makes one syscall.  Note Linux ties this to
    the *thread* that forked, so start from a long-lived thread.
    """
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def hook() -> None:
        pr_set_pdeathsig = 1
        prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # parent already died before prctl took effect
            os._exit(1)

    return hook


def tail(path: Path, lines: int = 30) -> str:
    """Last lines of a text file, or a note that it is missing."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


class _ManagedProcess:
    """A detached server process tracked by a pid file in its data directory.

    The process runs in its own session/process group so it outlives the CLI that
    started it and so stop() can signal everything it spawned.  An object can also
    adopt an already-running instance from the pid file (``infra.py down``).
    """

    name = "process"

    def __init__(self, data_dir: Path | str, die_with_parent: bool = False) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.die_with_parent = die_with_parent
        self._proc: subprocess.Popen[bytes] | None = None
        self.pid_file = self.data_dir / f"{self.name}.pid"
        self.out_file = self.data_dir / f"{self.name}.out"

    # subclass hooks
    def _command(self) -> list[str]:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Write config files etc. before the process is started."""

    def answers(self) -> bool:
        raise NotImplementedError

    def _owns_cmdline(self, cmdline: str) -> bool:
        raise NotImplementedError

    def _ready_extra(self) -> bool:
        return True

    def _log_tails(self) -> str:
        return f"--- {self.out_file} ---\n{tail(self.out_file)}"

    # pid handling
    @property
    def pid(self) -> int | None:
        """Pid of the running instance (started here or found via the pid file)."""
        if self._proc is not None:
            return self._proc.pid if self._proc.poll() is None else None
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if pid_alive(pid) and self._owns_cmdline(_pid_cmdline(pid)):
            return pid
        return None

    def is_running(self) -> bool:
        return self.pid is not None

    def start(self) -> None:
        """Start the process unless this data dir's instance is already running."""
        if self.is_running():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._prepare()
        cmd = self._command()
        with open(self.out_file, "ab") as out:
            out.write(f"\n=== {time.strftime('%F %T')} starting: {' '.join(cmd)}\n".encode())
            out.flush()
            self._proc = subprocess.Popen(
                cmd,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent_hook() if self.die_with_parent else None,
            )
        self.pid_file.write_text(f"{self._proc.pid}\n")

    def wait_ready(self, timeout: float = 60) -> None:
        """Block until the server answers; raise RuntimeError with log tails if not."""
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with code {self._proc.returncode} before it was "
                    f"ready\n{self._log_tails()}"
                )
            if self._ready_extra() and self.answers():
                return
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"{self.name} did not become ready within {timeout:.0f}s\n{self._log_tails()}"
                )
            time.sleep(0.2)

    def _signal(self, pid: int, sig: signal.Signals) -> None:
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def _wait_gone(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None:
                if self._proc.poll() is not None:
                    return True
            elif not pid_alive(pid):
                return True
            time.sleep(0.1)
        return False

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM the process group, SIGKILL after ``timeout``; safe to call twice."""
        pid = self.pid
        if pid is not None:
            self._signal(pid, signal.SIGTERM)
            if not self._wait_gone(pid, timeout):
                _say(f"{self.name} (pid {pid}) ignored SIGTERM for {timeout:.0f}s; killing")
                self._signal(pid, signal.SIGKILL)
                self._wait_gone(pid, 10)
        self._forget()

    def kill(self) -> None:
        """SIGKILL the process group at once (simulates a crash)."""
        pid = self.pid
        if pid is not None:
            self._signal(pid, signal.SIGKILL)
            self._wait_gone(pid, 10)
        self._forget()

    def _forget(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
            self._proc = None
        with contextlib.suppress(OSError):
            if self.pid_file.exists() and self.pid is None:
                self.pid_file.unlink()

    def __enter__(self) -> Self:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class KafkaBroker(_ManagedProcess):
    """Single-node KRaft Kafka (combined broker+controller) on 127.0.0.1.

    ``start()`` formats storage on first use and can be called again after
    ``stop()``/``kill()`` on the same data dir: topics and records survive.
    """

    name = "kafka"

    def __init__(
        self,
        port: int,
        controller_port: int,
        data_dir: Path | str,
        heap: str = "384m",
        *,
        libs_dir: Path | None = None,
        die_with_parent: bool = False,
        sasl_port: int | None = None,
        sasl_users: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(data_dir, die_with_parent)
        self.port = port
        self.controller_port = controller_port
        # Optional SASL_PLAINTEXT listener for clients (PLAIN, SCRAM-SHA-256/512).
        self.sasl_port = sasl_port
        self.sasl_users = dict(sasl_users or {})
        self.heap = heap
        self._libs_dir = libs_dir
        self.server_properties = self.data_dir / "server.properties"
        self.log4j_properties = self.data_dir / "log4j.properties"
        self.log_file = self.data_dir / "server.log"
        self._log_offset: int | None = None

    @property
    def bootstrap(self) -> str:
        """``bootstrap_servers`` value for clients."""
        return f"{HOST}:{self.port}"

    @property
    def sasl_bootstrap(self) -> str:
        """``bootstrap_servers`` of the SASL listener (needs ``sasl_port``)."""
        if self.sasl_port is None:
            raise RuntimeError("this broker has no SASL listener")
        return f"{HOST}:{self.sasl_port}"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "kafka-logs"

    def add_scram_user(self, name: str, password: str, mechanism: str = "SCRAM-SHA-512") -> None:
        """Create or update a SCRAM user on the running broker (kafka-configs)."""
        if mechanism not in SASL_MECHANISMS[1:]:
            raise ValueError(f"not a SCRAM mechanism: {mechanism}")
        cmd = scram_user_command(
            ensure_java(), self._libs(), self.bootstrap, name, password, mechanism
        )
        result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(
                f"adding SCRAM user {name!r} failed (exit {result.returncode}):\n"
                f"{(result.stdout + result.stderr)[-2000:]}"
            )
        self.sasl_users[name] = password

    def answers(self) -> bool:
        return kafka_answers(HOST, self.port)

    def _owns_cmdline(self, cmdline: str) -> bool:
        return "kafka.Kafka" in cmdline and str(self.server_properties) in cmdline

    def _libs(self) -> Path:
        if self._libs_dir is None:
            self._libs_dir = ensure_kafka_jars()
        return self._libs_dir

    def _prepare(self) -> None:
        for port in (self.port, self.controller_port, self.sasl_port):
            if port is not None and port_in_use(port):
                raise RuntimeError(f"cannot start Kafka: 127.0.0.1:{port} is already in use")
        java = ensure_java()
        libs = self._libs()
        props = kafka_server_properties(self.port, self.controller_port, self.data_dir)
        if self.sasl_port is not None:
            props = sasl_listener_properties(props, self.sasl_port, self.sasl_users)
        self.server_properties.write_text(
            render_properties(props, header="generated by deploy/local/infra.py")
        )
        self.log4j_properties.write_text(kafka_log4j_properties(self.log_file))
        if not (self.log_dir / "meta.properties").exists():
            cmd = kafka_format_command(
                java,
                libs,
                new_cluster_id(),
                self.server_properties,
                scram_format_args(self.sasl_users) if self.sasl_port is not None else (),
            )
            result = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise RuntimeError(
                    f"formatting Kafka storage in {self.log_dir} failed "
                    f"(exit {result.returncode}):\n{(result.stdout + result.stderr)[-4000:]}"
                )
        # Only a "started" line written after this point counts (the log is appended to).
        self._log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0

    def _command(self) -> list[str]:
        return kafka_java_command(
            ensure_java(), self._libs(), self.heap, self.log4j_properties, self.server_properties
        )

    def _ready_extra(self) -> bool:
        """When we started the JVM, also require its own "Kafka Server started" line.

        Guards against a foreign broker answering on the port while ours is failing.
        """
        if self._proc is None or self._log_offset is None:
            return True
        try:
            with open(self.log_file, "rb") as handle:
                handle.seek(self._log_offset)
                return KAFKA_STARTED_LINE.encode() in handle.read()
        except OSError:
            return False

    def _log_tails(self) -> str:
        return f"--- {self.log_file} ---\n{tail(self.log_file)}\n" + super()._log_tails()


class RedisServer(_ManagedProcess):
    """Debian's ``redis-server`` on 127.0.0.1, without persistence unless ``durable``."""

    name = "redis"

    def __init__(
        self,
        port: int,
        data_dir: Path | str,
        *,
        die_with_parent: bool = False,
        durable: bool = False,
    ) -> None:
        super().__init__(data_dir, die_with_parent)
        self.port = port
        self.durable = durable  # an fsynced append-only file: survives kill and restart
        self._binary: str | None = None

    @property
    def url(self) -> str:
        """``redis://`` URL of database 0."""
        return f"redis://{HOST}:{self.port}/0"

    def answers(self) -> bool:
        return redis_answers(HOST, self.port)

    def _owns_cmdline(self, cmdline: str) -> bool:
        # redis rewrites its process title to "redis-server 127.0.0.1:<port>".
        return "redis-server" in cmdline and f":{self.port}" in cmdline

    def _prepare(self) -> None:
        if port_in_use(self.port):
            raise RuntimeError(
                f"cannot start Redis: 127.0.0.1:{self.port} is already in use (a system "
                f"redis service? stop it or set {ENV_REDIS_PORT})"
            )
        self._binary = ensure_redis_server()

    def _command(self) -> list[str]:
        binary = self._binary or ensure_redis_server()
        return redis_command(binary, self.port, self.data_dir, self.durable)


def prometheus_command(
    prometheus: str, port: int, config_file: Path, data_dir: Path, retention: str = "1d"
) -> list[str]:
    """Prometheus flags: loopback only, own TSDB dir, reload endpoint for test configs."""
    return [
        prometheus, f"--config.file={config_file}",
        f"--storage.tsdb.path={data_dir / 'tsdb'}",
        f"--storage.tsdb.retention.time={retention}",
        f"--web.listen-address={HOST}:{port}",
        "--web.enable-lifecycle", "--log.level=warn",
    ]  # fmt: skip


def prometheus_answers(host: str, port: int, timeout: float = 2.0) -> bool:
    """True if Prometheus there says it is ready (``GET /-/ready`` answers 200)."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/-/ready", timeout=timeout) as answer:
            return bool(answer.status == 200)
    except (OSError, ValueError):
        return False


class PrometheusServer(_ManagedProcess):
    """Debian's ``prometheus`` on 127.0.0.1 with a config we write (JSON is YAML).

    ``configure()`` replaces the config of a running server and reloads it, so one
    server can scrape what each test starts; ``query()`` runs an instant query.
    """

    name = "prometheus"

    def __init__(
        self,
        port: int,
        data_dir: Path | str,
        config: Mapping[str, object] | None = None,
        *,
        die_with_parent: bool = False,
    ) -> None:
        super().__init__(data_dir, die_with_parent)
        self.port = port
        self.config_file = self.data_dir / "prometheus.yml"
        self._config: Mapping[str, object] = config or {"global": {"scrape_interval": "15s"}}
        self._binary: str | None = None

    @property
    def url(self) -> str:
        """Base URL of the HTTP API and UI."""
        return f"http://{HOST}:{self.port}"

    def answers(self) -> bool:
        return prometheus_answers(HOST, self.port)

    def _owns_cmdline(self, cmdline: str) -> bool:
        return "prometheus" in cmdline and f"{HOST}:{self.port}" in cmdline

    def _write_config(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.config_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._config, indent=2) + "\n")
        os.replace(tmp, self.config_file)

    def _prepare(self) -> None:
        if port_in_use(self.port):
            raise RuntimeError(f"cannot start Prometheus: 127.0.0.1:{self.port} is already in use")
        self._binary = ensure_prometheus()[0]
        self._write_config()

    def _command(self) -> list[str]:
        binary = self._binary or ensure_prometheus()[0]
        return prometheus_command(binary, self.port, self.config_file, self.data_dir)

    def configure(self, config: Mapping[str, object], timeout: float = 10) -> None:
        """Write ``config`` and make the running server load it (``POST /-/reload``).

        Prometheus answers the reload with an error when the config does not load; that
        error is raised here with its message.
        """
        self._config = config
        self._write_config()
        request = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout):
                return
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace").strip()
            raise RuntimeError(f"Prometheus refused the config: {detail}") from None

    def api(
        self, path: str, params: Mapping[str, str] | None = None, timeout: float = 10
    ) -> object:
        """GET ``/api/v1/<path>`` and return its ``data``; RuntimeError with Prometheus'
        own error text otherwise (a bad query is a 400 with ``error``)."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=timeout) as a:
                body = json.loads(a.read())
        except urllib.error.HTTPError as exc:
            try:
                body = json.loads(exc.read())
            except ValueError:
                raise RuntimeError(f"Prometheus answered {exc.code} to {path}") from None
        if body.get("status") != "success":
            raise RuntimeError(f"{path}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, object]]:
        """An instant query's result as a list of series (a scalar becomes one entry)."""
        data = self.api("query", {"query": expr})
        assert isinstance(data, dict)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])


# --------------------------------------------------------------------------- CLI


@dataclass(frozen=True)
class InfraConfig:
    """Where ``infra.py up`` puts things; read from the environment."""

    infra_dir: Path
    kafka_port: int
    kafka_controller_port: int
    kafka_heap: str
    redis_port: int

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> InfraConfig:
        env = os.environ if env is None else env

        def port(name: str, default: int) -> int:
            raw = env.get(name) or str(default)
            try:
                value = int(raw)
            except ValueError:
                raise ValueError(f"{name}={raw!r} is not a port number") from None
            if not 0 < value < 65536:
                raise ValueError(f"{name}={raw!r} is out of range")
            return value

        return cls(
            infra_dir=Path(env.get(ENV_INFRA_DIR) or "var/infra").expanduser().resolve(),
            kafka_port=port(ENV_KAFKA_PORT, 9092),
            kafka_controller_port=port(ENV_KAFKA_CONTROLLER_PORT, 9093),
            kafka_heap=env.get(ENV_KAFKA_HEAP) or "384m",
            redis_port=port(ENV_REDIS_PORT, 6379),
        )

    def kafka(self) -> KafkaBroker:
        return KafkaBroker(
            self.kafka_port, self.kafka_controller_port, self.infra_dir / "kafka", self.kafka_heap
        )

    def redis(self) -> RedisServer:
        return RedisServer(self.redis_port, self.infra_dir / "redis")


def _describe(service: KafkaBroker | RedisServer) -> str:
    return service.bootstrap if isinstance(service, KafkaBroker) else service.url


def cmd_up(cfg: InfraConfig, timeout: float = 90) -> int:
    """Start whatever is not running yet, wait until both answer."""
    services: list[KafkaBroker | RedisServer] = [cfg.kafka(), cfg.redis()]
    started: list[KafkaBroker | RedisServer] = []
    began = time.monotonic()
    try:
        ensure_redis_server()
        ensure_kafka_jars()
        for svc in services:
            if svc.is_running():
                if svc.answers():
                    print(f"{svc.name}: already running at {_describe(svc)} (pid {svc.pid})")
                continue
            svc.start()
            started.append(svc)
        for svc in services:
            if not svc.answers():
                svc.wait_ready(timeout)
    except (RuntimeError, OSError, KeyboardInterrupt) as exc:
        for svc in started:
            svc.stop()
        reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
        print(f"infra up failed: {reason}", file=sys.stderr)
        if isinstance(exc, RuntimeError) and any(s not in started for s in services):
            print(f"(a stale instance may be running; try `{sys.argv[0]} down`)", file=sys.stderr)
        return 1
    for svc in started:
        print(f"{svc.name}: started at {_describe(svc)} (pid {svc.pid}, data {svc.data_dir})")
    print(f"infra up in {time.monotonic() - began:.1f}s; stop with `make infra-down`")
    return 0


def cmd_down(cfg: InfraConfig) -> int:
    """Stop both services found via their pid files."""
    for svc in (cfg.kafka(), cfg.redis()):
        pid = svc.pid
        if pid is None:
            print(f"{svc.name}: not running")
            continue
        svc.stop()
        print(f"{svc.name}: stopped (pid {pid})")
    return 0


def cmd_status(cfg: InfraConfig) -> int:
    """Print each service's state; exit 0 if both answer, 3 otherwise (LSB style)."""
    all_up = True
    for svc in (cfg.kafka(), cfg.redis()):
        pid = svc.pid
        answering = svc.answers()
        all_up &= pid is not None and answering
        state = f"running (pid {pid})" if pid is not None else "not running"
        if answering:
            state += f", answering at {_describe(svc)}"
        elif pid is not None:
            state += f", NOT answering at {_describe(svc)}"
        print(f"{svc.name}: {state}; data {svc.data_dir}")
    return 0 if all_up else 3


def cmd_prepare(cfg: InfraConfig) -> int:
    """Fetch and install what ``up`` needs, start nothing.

    ``make test``/``make bench`` call this first so the one-time downloads happen up
    front with clear errors instead of inside a test fixture's timeout.
    """
    began = time.monotonic()
    try:
        libs = ensure_kafka_jars()
        java = ensure_java()
        redis_server = ensure_redis_server()
        prometheus, promtool = ensure_prometheus()
    except (RuntimeError, OSError) as exc:
        print(f"infra prepare failed: {exc}", file=sys.stderr)
        return 1
    print(f"kafka jars: {libs}")
    print(f"java: {java}")
    print(f"redis-server: {redis_server}")
    print(f"prometheus: {prometheus}")
    print(f"promtool: {promtool}")
    print(f"infra prepared in {time.monotonic() - began:.1f}s (nothing started)")
    return 0


COMMANDS: dict[str, Callable[[InfraConfig], int]] = {
    "up": cmd_up,
    "down": cmd_down,
    "status": cmd_status,
    "prepare": cmd_prepare,
}


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser (separate so tests can check it without running anything)."""
    parser = argparse.ArgumentParser(
        description="Local Kafka (KRaft) + Redis on 127.0.0.1 for development and tests.",
        epilog=(
            "prepare: fetch the Kafka jars, check java, install redis-server and prometheus "
            "(with promtool); start nothing. "
            f"env: {ENV_KAFKA_PORT} (9092), {ENV_KAFKA_CONTROLLER_PORT} (9093), "
            f"{ENV_REDIS_PORT} (6379), {ENV_INFRA_DIR} (./var/infra), "
            f"{ENV_KAFKA_HEAP} (384m), {ENV_CACHE_DIR} (~/.cache/msgstatus)"
        ),
    )
    parser.add_argument("command", choices=list(COMMANDS))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = InfraConfig.from_env()
    except ValueError as exc:
        print(f"infra: {exc}", file=sys.stderr)
        return 1
    return COMMANDS[args.command](cfg)


if __name__ == "__main__":
    sys.exit(main())
