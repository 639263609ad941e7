"""Worker metrics. Labels are bounded sets (provider, status, outcome, partition),
never a message id."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

NORMALIZED = Counter("msgstatus_normalized_events_total", "Canonical events produced", ["provider"])
DEADLETTERS = Counter(
    "msgstatus_deadletters_total",
    "Raw records, items or stage records dead-lettered, by bounded reason category",
    ["provider", "reason"],
)
OUTCOMES = Counter("msgstatus_ordering_outcomes_total", "Canonical events by outcome", ["outcome"])
EMITTED = Counter(
    "msgstatus_emitted_total", "message.status events published", ["status", "provider"]
)
FAILURES = Counter(
    "msgstatus_failures_total",
    "Failure statuses told, by provider, status and normalized error category",
    ["provider", "status", "category"],
)
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
    "msgstatus_read_model_dropped_total",
    "Read-model keys Redis refused for good, or records the projector could not read",
)
RESTORED = Counter(
    "msgstatus_restored_changelog_records_total",
    "Changelog records copied into RocksDB by the bulk restore at start-up or rebalance",
    ["table"],
)
ASKED = Counter(
    "msgstatus_delivery_unknown_asked_total",
    "Due deadlines of pollable providers asked about once before delivery_unknown",
)
END_TO_END = Histogram(
    "msgstatus_end_to_end_seconds",
    "Gateway receive time to emission of the event on message.status",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)
SEND_SECONDS = Histogram(
    "msgstatus_kafka_send_seconds",
    "Hand-over to acknowledgement of the worker's batched Kafka writes",
    ["kind"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
STATE_KEYS = Gauge(
    "msgstatus_state_keys", "Estimated keys in the worker's tables (owned partitions)", ["table"]
)
REBALANCES = Counter("msgstatus_rebalances_total", "Partitions taken from the worker's agents")
FENCED_WRITES = Counter(
    "msgstatus_fenced_writes_total",
    "Writes dropped because their partition was revoked (or the group lease lapsed)",
)
INPUT_GAPS = Counter(
    "msgstatus_input_gaps_total",
    "Times an agent's committed offset was below its input's log start (records expired)",
)
INPUT_RESEEKS = Counter(
    "msgstatus_input_reseeks_total", "Out-of-order fetches an agent skipped and sought back from"
)
WATERMARK_LAG = Gauge(
    "msgstatus_watermark_lag_seconds",
    "Wall clock minus the receive-time watermark the emitter last acted on",
    ["partition"],
)
STATE_RETRIES = Counter(
    "msgstatus_state_retries_total",
    "Redis state backend: decisions run again (learn: a guess was wrong; conflict: another "
    "writer changed a key; fenced: the partition's token moved; unavailable: Redis error)",
    ["table", "reason"],
)
STATE_APPLY_SECONDS = Histogram(
    "msgstatus_state_apply_seconds",
    "Redis state backend: one record's compare-and-apply script, call to answer",
    ["table"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
