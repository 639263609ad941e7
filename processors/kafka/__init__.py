"""The Kafka wing: what the gateway, the poller, the worker, the operator commands and
the benchmarks share about Kafka, and nothing else.

- `client.py`: every Kafka client's connection settings (TLS, SASL) in one place.
- `topics.py`: every topic name, and their creation.
- `raw.py`: the raw record (the provider's exact bytes plus what re-verification needs),
  written by the gateway and the poller, read by the worker and the operator commands.
- `writer.py`: the batching per-partition writer behind the gateway's raw sink and the
  worker's table and output writes.
- `offsets.py`: reading fixed ranges, end and committed offsets.

Nothing here imports the gateway, the stream or the operator commands.
"""
