"""Worker metrics. Labels are bounded sets (provider, status, outcome, partition),
never a message id."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

NORMALIZED = Counter("msgstatus_normalized_events_total", "Canonical events produced", ["provider"])
DEADLETTERS = Counter(
    "msgstatus_deadletters_total", "Raw records or items dead-lettered", ["provider"]
)
OUTCOMES = Counter("msgstatus_ordering_outcomes_total", "Canonical events by outcome", ["outcome"])
EMITTED = Counter("msgstatus_emitted_total", "message.status events published", ["status"])
REEMITTED = Counter(
    "msgstatus_reemitted_total",
    "Events published again, same id, for records redelivered after a crash",
)
DELIVERY_UNKNOWN = Counter("msgstatus_delivery_unknown_total", "delivery_unknown events emitted")
PENDING_DEADLINES = Gauge(
    "msgstatus_pending_deadlines",
    "Messages in `sent` waiting for their delivery_unknown deadline",
    ["partition"],
)
READ_MODEL_DROPPED = Counter(
    "msgstatus_read_model_dropped_total", "Read-model writes dropped (Redis down or slow)"
)
RESTORED = Counter(
    "msgstatus_restored_changelog_records_total",
    "Changelog records copied into RocksDB by the bulk restore at start-up or rebalance",
    ["table"],
)
