"""`msgstatus rebuild`: recompute state and output from the raw topics, then switch over.

After an operator fixed a mapping (and deployed the fix), the live state still holds
what the old mapping decided. A rebuild:

1. builds a *shadow generation* (shadow.py): the real worker, reading every retained
   record of the live raw topics into its own topics and state, up to the raw topics'
   ends when the rebuild started (progress on stderr) -- the live workers keep running;
2. waits for every live worker to be stopped (it says so on stderr), lets the shadow
   catch up with whatever the live workers had read, and drains it;
3. compares each in-scope message's live history with the rebuilt one, and switches
   over partition by partition (switch.py): the live tables get the rebuilt states (the
   stopped workers read them from their changelogs at the next start) and every changed
   message gets correction events on the live `message.status`, continuing its sequence
   (corrections.py); unchanged messages get nothing;
4. deletes the shadow generation; the workers can start again.

`--dry-run` does 1 and 3 without writing anything live (the workers may keep running)
and prints what would change. The journal (journal.py) records each rebuild's phase,
so a switch interrupted midway is finished by the next `msgstatus rebuild`, and a
worker refuses to start in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from processors import providers
from processors.config import Settings
from processors.kafka.topics import (
    CANONICAL,
    CONVERSATIONS,
    MAX_MESSAGE_BYTES,
    STATUS,
    TABLES,
    TRANSITIONS,
    all_topics,
    changelog_topic,
    ensure_topics,
)
from processors.ops import journal
from processors.ops.kafka import OpsError, connect
from processors.ops.progress import Progress, say
from processors.ops.shadow import Admin, Shadow, app_group, normalize_group, raw_topics
from processors.ops.switch import (
    PLAN,
    Generation,
    Plans,
    Reader,
    Scope,
    Tally,
    apply,
    compare,
    horizon,
)
from processors.store.readmodel import ReadModel

PROVIDER_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
LIVE_SETTLE = 60.0  # seconds a dry run waits for running live workers to catch up


class UsageError(ValueError):
    """Bad flags (exit status 2)."""


@dataclass(frozen=True)
class Request:
    scope: Scope
    dry_run: bool = False
    examples: int = 20
    stop_timeout: float = 3600.0
    read_model: bool = True


def request(
    names: list[str] | None,
    everything: bool,
    dry_run: bool = False,
    examples: int = 20,
    stop_timeout: float = 3600.0,
    read_model: bool = True,
) -> Request:
    """Validate the flags (DESIGN.md section 10): no selection means every provider.

    A provider is named as in message keys: a provider module's name, or the name your
    senders use in /v1/events reports."""
    if names and everything:
        raise UsageError("give --provider NAME (repeatable) or --all, not both")
    chosen = list(dict.fromkeys(names or []))
    wrong = [n for n in chosen if not PROVIDER_NAME.fullmatch(n)]
    if wrong:
        raise UsageError(f"not a provider name: {', '.join(map(repr, wrong))}")
    if examples < 0:
        raise UsageError("--examples takes a number of messages, 0 or more")
    if stop_timeout < 0:
        raise UsageError("--stop-timeout takes seconds, 0 or more")
    scope = Scope(frozenset(chosen) if chosen else None)
    return Request(scope, dry_run, examples, stop_timeout, read_model)


def _scope_text(scope: Scope) -> Any:
    return "all" if scope.providers is None else sorted(scope.providers)


async def _check_live(admin: Admin, settings: Settings) -> None:
    """The live topics the switch reads exist, with the configured partition count (the
    shadow uses it, and messages must land on the same partition numbers)."""
    names = [settings.topic(STATUS)] + [changelog_topic(settings, t) for t in TABLES]
    for name in names:
        parts = await admin.partitions([name])
        if len(parts) != settings.partitions:
            raise OpsError(
                f"{name} has {len(parts)} partitions but MSGSTATUS_PARTITIONS is "
                f"{settings.partitions}: run rebuild with the workers' settings"
            )
    await admin.partitions(raw_topics(settings))


async def _wait_stopped(admin: Admin, settings: Settings, shadow: Shadow, timeout: float) -> None:
    """Until no live worker is a member of the live consumer groups."""
    groups = [app_group(settings), normalize_group(settings)]
    deadline = time.monotonic() + timeout
    told = False
    while True:
        members = await admin.members(groups)
        if not any(members.values()):
            return
        if time.monotonic() >= deadline:
            raise OpsError(
                f"the live workers did not stop within {timeout:.0f} s "
                f"({', '.join(f'{g}: {n}' for g, n in members.items() if n)} members): "
                "nothing live was changed"
            )
        if not told:
            say(
                f"rebuild {shadow.name}: the shadow generation is built. Stop every "
                f"`msgstatus worker` now to switch over (waiting up to {timeout:.0f} s); "
                "the gateway and pollers may keep running"
            )
            told = True
        shadow.check()
        await asyncio.sleep(1.0)


async def _still_stopped(admin: Admin, settings: Settings) -> None:
    members = await admin.members([app_group(settings), normalize_group(settings)])
    if any(members.values()):
        raise OpsError(
            "a live worker started during the switch-over: stop every worker and run "
            "`msgstatus rebuild` again to finish it"
        )


async def _settle_live(admin: Admin, settings: Settings) -> None:
    """Dry run with live workers running: let them emit what they have read, so the
    comparison does not count their backlog as a difference."""
    group = app_group(settings)
    if not (await admin.members([group])).get(group):
        return
    deadline = time.monotonic() + LIVE_SETTLE
    for name in (CONVERSATIONS, CANONICAL, TRANSITIONS):
        tps = await admin.partitions([settings.topic(name)])
        targets = await admin.ends(tps)
        starts = await admin.starts(tps)
        while time.monotonic() < deadline:
            done = await admin.committed(group, tps)
            if all(max(done.get(tp, starts[tp]), starts[tp]) >= end for tp, end in targets.items()):
                break
            await asyncio.sleep(0.5)
        else:
            say("rebuild: the live workers are behind; the comparison may count their backlog")
            return


async def _build(admin: Admin, shadow: Shadow, targets: dict[Any, int], label: str) -> int:
    """Run the shadow until its normalize stage committed `targets`; returns the count."""
    if not shadow.alive():
        # its topics first, so that nothing waits on a worker still starting up
        await ensure_topics(shadow.settings, all_topics(shadow.settings, providers.REGISTRY))
        shadow.start()
    progress = Progress(label, None)
    await shadow.wait_committed(admin, normalize_group(shadow.settings), targets, progress)
    progress.finish()
    return progress.total or 0


async def _ensure_plan_topic(admin: Admin, settings: Settings, shadow: Shadow) -> str:
    name = shadow.settings.topic(PLAN)
    if name in await admin.admin.list_topics():
        return name
    topic = NewTopic(
        name,
        num_partitions=settings.partitions,
        replication_factor=settings.replication_factor,
        topic_configs={
            "min.insync.replicas": str(settings.min_insync_replicas),
            "max.message.bytes": str(MAX_MESSAGE_BYTES),
        },
    )
    response = await admin.admin.create_topics([topic])
    for topic_name, code, *_ in response.topic_errors:
        if code not in (0, TopicAlreadyExistsError.errno):
            raise OpsError(f"cannot create {topic_name} (error code {code})")
    return name


async def _switch(
    admin: Admin,
    settings: Settings,
    shadow: Shadow,
    req: Request,
    tally: Tally,
) -> int:
    """Compare every partition; unless dry run, plan and apply it. Returns the number of
    correction events published."""
    live, rebuilt = Generation.of(settings), Generation.of(shadow.settings)
    consumer, producer = await connect(settings, produce=not req.dry_run)
    read_model = None
    published = 0
    try:
        limit = await horizon(consumer, await admin.partitions(raw_topics(settings)))
        tps = await admin.partitions(live.topics() + rebuilt.topics())
        ends, starts = await admin.ends(tps), await admin.starts(tps)
        progress = Progress(
            f"rebuild {shadow.name}: comparing", sum(ends[tp] - starts[tp] for tp in tps)
        )
        reader = Reader(consumer, progress)
        plans = None
        if producer is not None:
            plans = Plans(
                await _ensure_plan_topic(admin, settings, shadow), producer, Reader(consumer)
            )
            if req.read_model:
                read_model = ReadModel.from_settings(settings)
        emitted_at = time.time()
        for partition in range(settings.partitions):
            if plans is not None and producer is not None:
                await _still_stopped(admin, settings)
                state, plan = await plans.load(partition)
                if state == "applied":
                    continue
                if state != "planned":
                    plan = await compare(
                        reader,
                        live,
                        rebuilt,
                        partition,
                        req.scope,
                        limit,
                        shadow.name,
                        emitted_at,
                        tally,
                    )
                    await plans.save(plan)
                published += await apply(producer, settings, plan, read_model)
                await plans.done(partition)
            else:
                await compare(
                    reader,
                    live,
                    rebuilt,
                    partition,
                    req.scope,
                    limit,
                    shadow.name,
                    emitted_at,
                    tally,
                )
        progress.finish()
    finally:
        if read_model is not None:
            await read_model.close()
        if producer is not None:
            await producer.stop()
        await consumer.stop()
    return published


async def _discard(admin: Admin, shadow: Shadow) -> None:
    """Delete the shadow generation; if Kafka does not let us, say what is left."""
    try:
        await shadow.cleanup(admin)
    except Exception as exc:
        say(
            f"rebuild {shadow.name}: could not delete the shadow generation ({exc!r}); "
            f"delete the topics and consumer groups starting with {shadow.prefix!r} and "
            f"{shadow.data_dir} by hand"
        )


async def _dry_run(admin: Admin, settings: Settings, req: Request, number: int) -> dict[str, Any]:
    shadow = Shadow(settings, f"{number}-dry-{secrets.token_hex(3)}")
    tally = Tally(req.examples)
    try:
        raw = await admin.partitions(raw_topics(settings))
        records = await _build(admin, shadow, await admin.ends(raw), f"rebuild {shadow.name}")
        # running live workers may have read further meanwhile: the shadow reads that too
        live_done = await admin.committed(normalize_group(settings), raw)
        await shadow.wait_committed(admin, normalize_group(shadow.settings), live_done)
        await shadow.drain(admin, say)
        shadow.stop()
        await _settle_live(admin, settings)
        await _switch(admin, settings, shadow, req, tally)
    finally:
        await _discard(admin, shadow)
    return {
        "rebuild": shadow.name,
        "dry_run": True,
        "providers": _scope_text(req.scope),
        "raw_records": records,
        **tally.to_dict(),
    }


async def _real(
    admin: Admin, settings: Settings, req: Request, number: int, resumed: bool
) -> dict[str, Any]:
    shadow = Shadow(settings, str(number))
    tally = Tally(req.examples)
    switching = resumed
    records = 0
    raw = await admin.partitions(raw_topics(settings))
    try:
        if not resumed:
            await journal.write(
                settings,
                number,
                journal.BUILDING,
                providers=_scope_text(req.scope),
                shadow=shadow.prefix,
            )
            records = await _build(admin, shadow, await admin.ends(raw), f"rebuild {number}")
            await _wait_stopped(admin, settings, shadow, req.stop_timeout)
            await journal.write(
                settings,
                number,
                journal.SWITCHING,
                providers=_scope_text(req.scope),
                shadow=shadow.prefix,
            )
            switching = True
            # a worker that started just before the journal said so (it checks at start)
            await _wait_stopped(admin, settings, shadow, req.stop_timeout)
        # Everything a live worker read is in the raw topics up to their ends now (the
        # workers are stopped): the shadow reads at least that far, then drains.
        records = max(
            records,
            await _build(admin, shadow, await admin.ends(raw), f"rebuild {number}: catching up"),
        )
        await shadow.drain(admin, say)
        shadow.stop()
        published = await _switch(admin, settings, shadow, req, tally)
        await _still_stopped(admin, settings)
        summary = {
            "rebuild": str(number),
            "dry_run": False,
            "resumed": resumed,
            "providers": _scope_text(req.scope),
            "raw_records": records,
            **tally.to_dict(),
            "published": published,
        }
        await journal.write(
            settings,
            number,
            journal.DONE,
            providers=_scope_text(req.scope),
            messages=summary["messages"],
            published=published,
        )
        switching = False
        await _discard(admin, shadow)
        say(f"rebuild {number}: switched over; start the workers again")
        return summary
    except BaseException:
        shadow.stop()
        if switching:
            say(
                f"rebuild {number} stopped while switching over: run `msgstatus rebuild` "
                "again to finish it; the workers refuse to start until then"
            )
        else:
            with contextlib.suppress(Exception):  # Kafka may be what failed
                await journal.write(
                    settings, number, journal.FAILED, providers=_scope_text(req.scope)
                )
            await _discard(admin, shadow)
        raise


async def run(settings: Settings, req: Request) -> dict[str, Any]:
    admin = Admin(settings)
    await admin.start()
    try:
        await _check_live(admin, settings)
        entries = await journal.read(settings)
        last = journal.latest(entries)
        if last is not None and last.get("phase") == journal.SWITCHING:
            number = int(last["rebuild"])
            if req.dry_run:
                raise OpsError(
                    f"rebuild {number} is switching over: run `msgstatus rebuild` without "
                    "--dry-run to finish it first"
                )
            scope = last.get("providers")
            say(f"rebuild {number} did not finish its switch-over: finishing it now")
            resumed = Request(
                Scope(None if scope == "all" else frozenset(scope)),
                examples=req.examples,
                read_model=req.read_model,
            )
            await _wait_stopped(admin, settings, Shadow(settings, str(number)), req.stop_timeout)
            return await _real(admin, settings, resumed, number, resumed=True)
        number = journal.next_number(entries)
        if req.dry_run:
            return await _dry_run(admin, settings, req, number)
        if last is not None and last.get("phase") == journal.BUILDING:
            old = int(last["rebuild"])
            say(
                f"rebuild {old} (pid {last.get('pid')} on {last.get('host')}) did not "
                "finish building; discarding its shadow generation"
            )
            await Shadow(settings, str(old)).cleanup(admin)
            await journal.write(settings, old, journal.FAILED, reason="abandoned")
        return await _real(admin, settings, req, number, resumed=False)
    finally:
        await admin.close()


def main(settings: Settings, req: Request) -> dict[str, Any]:
    """Run to the end; SIGTERM and Ctrl-C stop it cleanly (the shadow worker too)."""
    import signal

    async def guarded() -> dict[str, Any]:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        if task is not None:
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
        return await run(settings, req)

    try:
        return asyncio.run(guarded())
    except (KeyboardInterrupt, asyncio.CancelledError):
        raise OpsError("rebuild interrupted") from None
