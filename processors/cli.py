"""`msgstatus` command line: gateway, worker, poller, tail, status, replay, redrive, rebuild, ...

Exit status 0 on success, 2 on bad usage, 1 on failure; progress on stderr, results on
stdout (DESIGN.md section 10).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson

from processors import providers
from processors.config import ConfigError, Settings
from processors.kafka import client as kafka_client
from processors.kafka.topics import STATUS, all_topics, ensure_topics
from processors.ops import commands as ops_commands

log = logging.getLogger("msgstatus")


def _logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


async def _run_until_signal(main: asyncio.Task) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, main.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await main


def cmd_gateway(settings: Settings, args: argparse.Namespace) -> int:
    from processors import eventloop
    from processors.ingest.gateway import serve
    from processors.ingest.producer import KafkaRawSink
    from processors.store.readmodel import ReadModel

    async def main() -> None:
        sink = KafkaRawSink(settings)
        connect = asyncio.create_task(sink.start_when_reachable())
        try:
            await asyncio.wait_for(
                ensure_topics(settings, all_topics(settings, providers.REGISTRY)), 30
            )
        except Exception as exc:  # Kafka may be down: webhooks then get 503 until it is back
            log.warning("could not create topics now (%s); continuing", exc)
        read_model = ReadModel.from_settings(settings) if settings.api_token else None
        try:
            await serve(settings, sink, read_model)
        finally:
            connect.cancel()
            await sink.stop()
            if read_model is not None:
                await read_model.close()

    eventloop.run(_run_until_signal_main(main), settings.gateway_event_loop)
    return 0


async def _run_until_signal_main(factory) -> None:  # type: ignore[no-untyped-def]
    await _run_until_signal(asyncio.create_task(factory()))


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    import faust

    from processors import probes
    from processors.store.readmodel import ReadModel
    from processors.stream import patches
    from processors.stream.app import build, quiet_logging

    try:
        patches.check()
    except RuntimeError as exc:
        print(f"msgstatus worker: {exc}", file=sys.stderr)
        return 2
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    if ops_commands.rebuild_switching(settings, loop):
        return 1
    loop.run_until_complete(ensure_topics(settings, all_topics(settings, providers.REGISTRY)))
    if settings.metrics_port:
        probes.serve(settings.metrics_port, settings.http_host, probes.required(settings))
    read_model = None if args.no_read_model else ReadModel.from_settings(settings)
    app = build(settings, read_model)
    worker = faust.Worker(
        app, loop=loop, loglevel=settings.log_level, redirect_stdouts=False, quiet=True
    )
    quiet_logging(settings.log_level)
    worker.execute_from_commandline()
    return 0


def cmd_tail(settings: Settings, args: argparse.Namespace) -> int:
    from aiokafka import AIOKafkaConsumer

    async def main() -> None:
        consumer = AIOKafkaConsumer(
            settings.topic(STATUS),
            **kafka_client.client_kwargs(settings),
            auto_offset_reset="earliest" if args.from_beginning else "latest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            async for record in consumer:
                event = orjson.loads(record.value)
                if args.json:
                    sys.stdout.write(record.value.decode() + "\n")
                else:
                    d = event["data"]
                    implied = f" (implied {','.join(d['implied'])})" if d["implied"] else ""
                    err = f" error={d['error']['category']}" if d.get("error") else ""
                    sys.stdout.write(
                        f"{d['emitted_at']} {d['message_key']:<40} #{d['sequence']:<2} "
                        f"{d['previous_status'] or '-':>16} -> {d['status']}{implied}{err}\n"
                    )
                sys.stdout.flush()
        finally:
            await consumer.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run_until_signal_main(main))
    return 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from processors.store.readmodel import ReadModel

    async def main() -> dict | None:
        model = ReadModel.from_settings(settings)
        try:
            return await model.get(args.message_key)
        finally:
            await model.close()

    doc = asyncio.run(main())
    if doc is None:
        print(f"unknown message {args.message_key!r}", file=sys.stderr)
        return 1
    sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


def cmd_providers(settings: Settings, args: argparse.Namespace) -> int:
    from processors.providers import coverage

    registry = providers.REGISTRY
    if args.markdown:
        sys.stdout.write(coverage.markdown(registry))
    else:
        enabled = {name: module.enabled(settings) for name, module in registry.items()}
        sys.stdout.write(coverage.text(registry, enabled))
    return 0


def cmd_poller(settings: Settings, args: argparse.Namespace) -> int:
    from processors.ingest.pollers.runner import run

    return run(settings)


def _from_checkout(settings: Settings, args: argparse.Namespace) -> int:
    """`bench` and `demo` live in the source checkout's top-level `bench/` package, not in
    the installed product: run them from there, or say how to get it."""
    root = Path(__file__).resolve().parents[1]
    if not ((root / "pyproject.toml").is_file() and (root / "bench" / "__init__.py").is_file()):
        print(
            f"msgstatus {args.command}: the benchmarks and the demo traffic are not part of "
            "the installed msgstatus package; run them from a source checkout "
            "(git clone the msgstatus repository, then `make bench` or `make run` there)",
            file=sys.stderr,
        )
        return 2
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    if args.command == "bench":
        from bench.__main__ import main as bench_main

        return bench_main(args.bench_args[1:])  # after the "--" main() put first
    from bench.demo import run_demo

    return run_demo(settings, args)


def _switching(settings: Settings) -> bool:
    """True (after saying why) while a rebuild switches over the live state."""
    loop = asyncio.new_event_loop()
    try:
        return ops_commands.rebuild_switching(settings, loop)
    finally:
        loop.close()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="msgstatus", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("gateway", help="HTTP gateway: verify webhooks, write them to Kafka")
    w = sub.add_parser("worker", help="stream worker: normalize, order, emit")
    w.add_argument("--no-read-model", action="store_true", help="do not write the Redis read model")
    w.add_argument("--no-supervisor", action="store_true", help=NO_SUPERVISOR_HELP)
    t = sub.add_parser("tail", help="print message.status events")
    t.add_argument("--from-beginning", action="store_true")
    t.add_argument("--json", action="store_true", help="print the CloudEvents as JSON lines")
    s = sub.add_parser("status", help="show one message from the read model")
    s.add_argument("message_key")
    pv = sub.add_parser("providers", help="coverage table: channels, statuses, signatures")
    pv.add_argument("--markdown", action="store_true", help="print it as a Markdown table")
    b = sub.add_parser("bench", help="run the benchmarks side by side, write docs/benchmarks.md")
    b.add_argument(
        "bench_args", nargs=argparse.REMAINDER, help="--quick, --only SECTION..., --out FILE"
    )
    po = sub.add_parser("poller", help="poll poll-only providers (RyzeAPI, Octopods) for statuses")
    po.add_argument("--no-supervisor", action="store_true", help=NO_SUPERVISOR_HELP)
    d = sub.add_parser("demo", help="send signed demo webhooks to a running gateway")
    d.add_argument("--messages", type=int, default=300)
    d.add_argument("--url", default=None, help="gateway base URL (default from MSGSTATUS_HTTP_*)")
    d.add_argument("--seed", type=int, default=7)
    d.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to wait for every final status"
    )
    ops_commands.add_parsers(sub)
    return p


NO_SUPERVISOR_HELP = (
    "run in this process instead of a child that is restarted after every exit "
    "(for systemd, Kubernetes and other managers that restart it themselves)"
)
SUPERVISED = ("worker", "poller")

COMMANDS = {
    "gateway": cmd_gateway,
    "worker": cmd_worker,
    "tail": cmd_tail,
    "status": cmd_status,
    "providers": cmd_providers,
    "poller": cmd_poller,
    "replay": ops_commands.cmd_replay,
    "redrive": ops_commands.cmd_redrive,
    "rebuild": ops_commands.cmd_rebuild,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # its options are the benchmarks' own (argparse.REMAINDER
        argv = ["bench", "--", *argv[1:]]  # refuses a first one that starts with "-")
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        providers.check(settings)
    except ConfigError as exc:
        print(f"msgstatus: {exc}", file=sys.stderr)
        return 2
    _logging(settings)
    if args.command in ("bench", "demo"):
        return _from_checkout(settings, args)
    if args.command in SUPERVISED and not args.no_supervisor:
        from processors.supervisor import supervise

        if args.command == "worker" and _switching(settings):
            return 1  # refused before supervising: a restart loop would not finish it

        child = [sys.executable, "-m", "processors.cli", *argv, "--no-supervisor"]
        return supervise(child, f"msgstatus {args.command}")
    try:
        return COMMANDS[args.command](settings, args)
    except KeyboardInterrupt:
        return 0
    except Exception as exc:
        log.error("%s failed: %s", args.command, exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
