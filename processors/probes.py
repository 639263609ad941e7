"""The worker's HTTP port (MSGSTATUS_METRICS_PORT): `/metrics`, `/healthz` and `/readyz`.

`/readyz` answers 503 while a dependency the worker cannot work without did not answer
its last check (Kafka; Redis too with MSGSTATUS_STATE_BACKEND=redis, where a Redis
outage pauses the agents): a load balancer or an operator sees the pause, not only the
`msgstatus_dependency_up` gauge. Every other path serves the metrics, as before.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import make_server

import orjson
from prometheus_client import REGISTRY, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer, _get_best_family, _SilentHandler

from processors import dependencies
from processors.config import Settings

Start = Callable[[str, list[tuple[str, str]]], Any]


def required(settings: Settings) -> tuple[str, ...]:
    """What a worker cannot process records without."""
    if settings.state_backend == "redis":
        return (dependencies.KAFKA, dependencies.REDIS)
    return (dependencies.KAFKA,)


def app(needs: tuple[str, ...]) -> Callable[[dict[str, Any], Start], Iterable[bytes]]:
    metrics = make_wsgi_app(REGISTRY)

    def serve(environ: dict[str, Any], start: Start) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            return _json(start, "200 OK", {"status": "ok"})
        if path == "/readyz":
            ok, states = dependencies.ready(needs)
            body = {"status": "ready" if ok else "unavailable", "dependencies": states}
            return _json(start, "200 OK" if ok else "503 Service Unavailable", body)
        return metrics(environ, start)

    return serve


def _json(start: Start, status: str, body: dict[str, Any]) -> list[bytes]:
    data = orjson.dumps(body)
    start(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


def serve(port: int, host: str, needs: tuple[str, ...]) -> ThreadingWSGIServer:
    """Serve in a daemon thread, like prometheus_client.start_http_server."""

    class Server(ThreadingWSGIServer):
        """prometheus_client's server, with the address family of `host`."""

    Server.address_family, addr = _get_best_family(host, port)
    httpd = make_server(addr, port, app(needs), Server, handler_class=_SilentHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd
