"""Running the pieces in one process: an embedded Celery worker and uvicorn in threads."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import uvicorn
from celery import Celery
from celery.worker import WorkController


class _SignallingWorker(WorkController):  # type: ignore[misc]
    """A WorkController that says when its consumer is ready."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.ready = threading.Event()
        super().__init__(*args, **kwargs)

    def on_consumer_ready(self, consumer: Any) -> None:
        """Celery calls this once the consumer takes messages."""
        self.ready.set()


@contextlib.contextmanager
def embedded_worker(
    app: Celery,
    *,
    queues: Sequence[str],
    pool: str = "threads",
    concurrency: int = 2,
    loglevel: str = "WARNING",
    startup_timeout: float = 30.0,
) -> Iterator[WorkController]:
    """Run a Celery worker consuming `queues` in a background thread for the duration of the block."""
    worker = _SignallingWorker(
        app=app,
        queues=list(queues),
        pool=pool,
        concurrency=concurrency,
        loglevel=loglevel,
        hostname=f"embedded-{threading.get_ident()}@localhost",
        without_heartbeat=True,
        without_mingle=True,
        without_gossip=True,
    )
    thread = threading.Thread(target=worker.start, name="celery-worker", daemon=True)
    thread.start()
    if not worker.ready.wait(startup_timeout):
        worker.stop(in_sighandler=False)
        raise RuntimeError(f"embedded Celery worker did not start within {startup_timeout:.0f}s")
    try:
        yield worker
    finally:
        worker.stop(in_sighandler=False)
        thread.join(15)


@contextlib.contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve an ASGI app with uvicorn in a background thread; yields its base URL."""
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    for _ in range(500):
        if server.started or not thread.is_alive():
            break
        threading.Event().wait(0.01)
    if not server.started:
        raise RuntimeError(f"uvicorn did not start on {host}:{port}")
    bound = server.servers[0].sockets[0].getsockname()
    try:
        yield f"http://{bound[0]}:{bound[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
