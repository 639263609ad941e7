"""What each registered provider covers, generated from code (`msgstatus providers`).

Every provider module declares its own COVERAGE: channels, the signature scheme and the
receipts each channel reports (PROVIDERS.md capability table), plus the statuses it
emits outside its STATUS_MAP. The canonical statuses of a row are the module's
STATUS_MAP values and those. README.md's provider section is this table's Markdown
(`msgstatus providers --markdown`), checked by a test.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import ModuleType

from processors.model import ENGAGEMENT, FAILURES, INBOUND, PROGRESS, STATUSES

# Canonical order for display: progress by rank, failures, inbound, engagement.
_FAILURE_ORDER = ("failed", "undelivered", "rejected", "expired", "canceled")
_ENGAGEMENT_ORDER = ("deleted", "replied", "opened", "clicked", "complained", "unsubscribed")
ORDER: tuple[str, ...] = (
    *PROGRESS,
    *_FAILURE_ORDER,
    *sorted(INBOUND),
    *_ENGAGEMENT_ORDER,
)
assert set(ORDER) == STATUSES and set(_FAILURE_ORDER) == FAILURES, "model.py changed"
assert set(_ENGAGEMENT_ORDER) == ENGAGEMENT, "model.py changed"

DR = ("delivered",)
DRR = ("delivered", "read")


@dataclass(frozen=True, slots=True)
class Coverage:
    channels: tuple[str, ...]
    signature: str
    receipts: Mapping[str, tuple[str, ...]]  # channel -> receipts it reports
    # Statuses a module emits outside its STATUS_MAP (e.g. SES permanent bounces).
    extra_statuses: tuple[str, ...] = ()
    # For modules without a STATUS_MAP: the statuses they emit, listed here.
    statuses: tuple[str, ...] = ()


# The usual signature cells.
TOKEN = "shared token (`token` header or Bearer)"
QUERY_TOKEN = "shared token (`?token=`, `token` header or Bearer)"
BASIC = "HTTP Basic"


@dataclass(frozen=True, slots=True)
class Row:
    provider: str
    channels: str
    statuses: str
    signature: str
    receipts: str


def ordered(statuses: Iterable[str]) -> list[str]:
    wanted = set(statuses)
    return [s for s in ORDER if s in wanted]


def statuses_of(module: ModuleType, coverage: Coverage) -> list[str]:
    """Canonical statuses the module maps to: its STATUS_MAP values, plus the extras."""
    table = getattr(module, "STATUS_MAP", None)
    found: set[str] = set(coverage.statuses) | set(coverage.extra_statuses)
    if isinstance(table, Mapping):
        found |= {v for v in table.values() if isinstance(v, str)}
    return ordered(found & STATUSES)


def receipts_cell(coverage: Coverage) -> str:
    if not coverage.receipts:
        return "none"
    return "; ".join(f"{ch}: {', '.join(kinds)}" for ch, kinds in coverage.receipts.items())


def rows(registry: Mapping[str, ModuleType]) -> list[Row]:
    """One row per registered provider, sorted by name (`events` last: it is ours)."""
    names = sorted(registry, key=lambda n: (n == "events", n))
    out: list[Row] = []
    for name in names:
        coverage = registry[name].COVERAGE
        out.append(
            Row(
                provider=name,
                channels=", ".join(coverage.channels) or "?",
                statuses=", ".join(statuses_of(registry[name], coverage)) or "none",
                signature=coverage.signature,
                receipts=receipts_cell(coverage),
            )
        )
    return out


HEADERS = ("provider", "channels", "statuses (canonical)", "signature", "receipts")


def markdown(registry: Mapping[str, ModuleType]) -> str:
    """The table as GitHub Markdown; `|` in a cell is escaped."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for row in rows(registry):
        values = (row.provider, row.channels, row.statuses, row.signature, row.receipts)
        lines.append("| " + " | ".join(cell(v) for v in values) + " |")
    return "\n".join(lines) + "\n"


def text(registry: Mapping[str, ModuleType], enabled: Mapping[str, bool]) -> str:
    """An aligned plain-text table for terminals, with each provider's enabled state."""
    head = ("provider", "state", "channels", "signature", "receipts", "statuses")
    table = [head]
    for row in rows(registry):
        state = "enabled" if enabled.get(row.provider) else "disabled"
        table.append((row.provider, state, row.channels, row.signature, row.receipts, row.statuses))
    widths = [max(len(line[i]) for line in table) for i in range(len(head) - 1)]
    out = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False))
        + "  "
        + line[-1]
        for line in table
    ]
    return "\n".join(out) + "\n"
