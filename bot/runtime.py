"""Running the pieces in one process: an embedded Celery worker and uvicorn in threads."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import signal
import subprocess
import sys
import threading
import time
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
    name: str = "embedded",
) -> Iterator[WorkController]:
    """Run a Celery worker consuming `queues` in a background thread for the duration of the block.

    Several may run in one process (one per lane): `name` keeps their node names apart.
    """
    worker = _SignallingWorker(
        app=app,
        queues=list(queues),
        pool=pool,
        concurrency=concurrency,
        loglevel=loglevel,
        hostname=f"{name}-{threading.get_ident()}@localhost",
        without_heartbeat=True,
        without_mingle=True,
        without_gossip=True,
    )
    thread = threading.Thread(target=worker.start, name=f"celery-worker-{name}", daemon=True)
    thread.start()
    if not worker.ready.wait(startup_timeout):
        worker.stop(in_sighandler=False)
        raise RuntimeError(f"embedded Celery worker did not start within {startup_timeout:.0f}s")
    try:
        yield worker
    finally:
        worker.stop(in_sighandler=False)
        thread.join(15)


def settle_heap() -> None:
    """Move everything built at start-up out of the garbage collector's sight (gc.freeze).

    The web app's start-up objects (FastAPI, pydantic schemas, clients: ~10^5 objects) never become
    garbage, yet every full collection walked them: a stall of tens of ms every few thousand requests,
    which was most of ingest's p99. Call once, after building the app and before serving.
    """
    gc.collect()
    gc.freeze()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGTERM when the parent dies, even by SIGKILL (no orphaned workers)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@contextlib.contextmanager
def worker_processes(
    lanes: Sequence[tuple[str, Sequence[str], int]], *, loglevel: str = "WARNING", stop_timeout: float = 15.0
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Run one `incident-bot worker` child process per (lane, queues, threads) for the block.

    Celery runs one worker per process (kombu's event loop is process-global), so lanes beyond the one a
    process embeds are child processes. Leaving the block stops them with SIGTERM (Celery's warm shutdown:
    running tasks finish), then SIGKILL after `stop_timeout`.
    """
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _lane, queues, threads in lanes:
            argv = [sys.executable, "-m", "bot.cli", "worker", "--queues", ",".join(queues)]
            argv += ["--pool", "threads", "--concurrency", str(threads)]
            procs.append(subprocess.Popen(argv, preexec_fn=_die_with_parent))  # noqa: S603
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + stop_timeout
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


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
