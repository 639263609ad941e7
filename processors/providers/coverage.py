"""What each registered provider covers, generated from code (`msgstatus providers`).

The canonical statuses come from each module's own STATUS_MAP (plus the few it emits
outside that table, listed here); channels, the signature scheme and the receipts each
channel reports (PROVIDERS.md capability table) live in the registry-side table below,
so provider modules need no extra attributes. README.md's provider section is this
table's Markdown (`msgstatus providers --markdown`), checked by a test.
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


_TOKEN = "shared token (`token` header or Bearer)"
_QUERY_TOKEN = "shared token (`?token=`, `token` header or Bearer)"
_BASIC = "HTTP Basic"

# One entry per provider name of PROVIDERS.md; only registered providers are printed.
TABLE: dict[str, Coverage] = {
    "events": Coverage(
        channels=("any",),
        signature="Bearer token or Standard Webhooks (HMAC-SHA256)",
        receipts={"api": DRR, "web": DRR},
        statuses=tuple(s for s in ORDER if s != "delivery_unknown"),
    ),
    "twilio": Coverage(
        channels=("sms", "mms", "whatsapp", "messenger", "rcs"),
        signature="HMAC-SHA1 of URL + sorted params (X-Twilio-Signature)",
        receipts={"sms": DR, "mms": DR, "whatsapp": DRR, "messenger": DRR, "rcs": DRR},
    ),
    "meta": Coverage(
        channels=("whatsapp", "messenger", "instagram"),
        signature="HMAC-SHA256 of body (X-Hub-Signature-256)",
        receipts={"whatsapp": DRR, "messenger": DRR, "instagram": ("read",)},
    ),
    "360dialog": Coverage(
        channels=("whatsapp",),
        signature="shared token (D360-API-KEY, `token` or Bearer)",
        receipts={"whatsapp": DRR},
    ),
    "ryze": Coverage(
        channels=("whatsapp",),
        signature=_TOKEN,
        receipts={"whatsapp": DRR},
    ),
    "octopods": Coverage(
        channels=("whatsapp", "sms", "viber"),
        signature=_TOKEN,
        receipts={"whatsapp": DRR, "sms": DR, "viber": DR},
        extra_statuses=("deleted",),
    ),
    "tracksend": Coverage(
        channels=("sms", "rcs"),
        signature=_TOKEN,
        receipts={"sms": DR, "rcs": DRR},
    ),
    "bandwidth": Coverage(
        channels=("sms", "mms"), signature=_BASIC, receipts={"sms": DR, "mms": DR}
    ),
    "sinch": Coverage(channels=("sms",), signature=_BASIC, receipts={"sms": DR}),
    "infobip": Coverage(
        channels=("sms", "mms", "whatsapp", "viber", "rcs", "messenger", "line"),
        signature=_BASIC,
        receipts={"sms": DR, "mms": DR, "whatsapp": DRR, "viber": DR, "rcs": DRR, "messenger": DRR},
        extra_statuses=("failed",),  # UNDELIVERABLE_NOT_SENT: never left Infobip
    ),
    "vonage": Coverage(
        channels=("sms",), signature="signed params (`sig`, HMAC or MD5)", receipts={"sms": DR}
    ),
    "plivo": Coverage(
        channels=("sms", "mms", "whatsapp"),
        signature="HMAC-SHA256 with nonce (X-Plivo-Signature-V3)",
        receipts={"sms": DR, "mms": DR, "whatsapp": DRR},
    ),
    "smpp": Coverage(
        channels=("sms",),
        signature="HTTP Basic or shared token (`?token=`, `token` header or Bearer)",
        receipts={"sms": DR},
        extra_statuses=("failed",),  # Jasmin level-1 ESME_R* refusals
    ),
    "line": Coverage(
        channels=("line",),
        signature="HMAC-SHA256 of body, base64 (X-Line-Signature)",
        receipts={},  # none: senders report LINE statuses through /v1/events
    ),
    "tiktok": Coverage(channels=("tiktok",), signature=_TOKEN, receipts={"tiktok": ("read",)}),
    "sendgrid": Coverage(
        channels=("email",),
        signature="ECDSA P-256 of timestamp + body (X-Twilio-Email-Event-Webhook-Signature)",
        receipts={"email": DRR},
    ),
    "ses": Coverage(
        channels=("email",),
        signature="SNS message signature (RSA, certificate from SNS)",
        receipts={"email": DRR},
        extra_statuses=("undelivered",),
    ),
    "mailgun": Coverage(
        channels=("email",),
        signature="HMAC-SHA256 of timestamp + token (in the body)",
        receipts={"email": DRR},
        extra_statuses=("undelivered",),
    ),
}
# issue 16 providers (PROVIDERS-NEXT.md)
TABLE.update(
    {
        "vonage-messages": Coverage(
            channels=("sms", "mms", "rcs", "whatsapp", "viber", "messenger"),
            signature="JWT HS256 in Authorization (payload_hash, iat window)",
            receipts={
                "sms": DR,
                "mms": DR,
                "rcs": DRR,
                "whatsapp": DRR,
                "viber": DRR,
                "messenger": DRR,
            },
            extra_statuses=("expired",),  # rejected with code 1360
        ),
        "telnyx": Coverage(
            channels=("sms", "mms"),
            signature="Ed25519 of timestamp|body (telnyx-signature-ed25519)",
            receipts={"sms": DR, "mms": DR},
        ),
        "bird": Coverage(
            channels=("sms", "whatsapp", "email", "rcs"),
            signature="HMAC-SHA256 of timestamp, URL, body hash (messagebird-signature); "
            "legacy MessageBird-Signature-JWT",
            receipts={"sms": DR, "whatsapp": DRR, "email": DRR, "rcs": DRR},
            # interactions, inbound, and the legacy SMS status report words
            extra_statuses=(
                "read",
                "clicked",
                "complained",
                "unsubscribed",
                "received",
                "scheduled",
                "expired",
            ),
        ),
        "postmark": Coverage(
            channels=("email",),
            signature="HTTP Basic (credentials in the webhook URL)",
            receipts={"email": DRR},
            extra_statuses=("undelivered", "rejected", "failed", "unsubscribed"),  # bounces
        ),
        "brevo": Coverage(
            channels=("email", "sms"),
            signature=_QUERY_TOKEN,
            receipts={"email": DRR, "sms": DR},
            extra_statuses=("replied",),  # SMS replies
        ),
        "africastalking": Coverage(channels=("sms",), signature=_QUERY_TOKEN, receipts={"sms": DR}),
        "gupshup": Coverage(
            channels=("whatsapp",),
            signature=_QUERY_TOKEN,
            receipts={"whatsapp": DRR},
            extra_statuses=("undelivered",),  # failures with a WhatsApp error code
        ),
    }
)
UNKNOWN = Coverage(channels=(), signature="?", receipts={})


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
        coverage = TABLE.get(name, UNKNOWN)
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
