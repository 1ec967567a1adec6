"""The endpoint's query workers: processes that evaluate queries, supervised by the server.

A store can take its process down (pyoxigraph 0.5.13 aborts on ``ORDER BY`` over some mixes of
literals: a Rust sort panics on a comparison that is not a total order) and neither store can
interrupt an evaluation. So no query runs in the server process: each runs in a worker process
that has its own copy of the store, and a worker that dies or runs past the time limit costs its
one request (500, or 503 for the time limit) and is replaced.

Workers are forked from a *zygote*: a process forked once, when serving starts, holding the store
as loaded and nothing else (no sockets, one thread). Forking workers from it, never from the
multi-threaded server, keeps them free of locks held by the server's threads and of its client
connections. The zygote hands each new worker's pipe to the server over a Unix socket.

Memory: workers share the store's pages with the zygote until they touch them (copy-on-write);
Python's reference counts touch many, so count up to one store's size per worker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from multiprocessing.reduction import recv_handle, send_handle

from fedsim.core.errors import FedsimError
from ontology.endpoint_formats import Reply, reply
from ontology.endpoint_guard import refusal
from ontology.store import OxigraphStore, QueryError, RegistryStore

__all__ = ["WorkerPool"]

_LOG = logging.getLogger(__name__)
_REAP_S = 2.0  # how long close() waits for the zygote to leave before killing it


@dataclass(frozen=True)
class _Worker:
    pid: int
    conn: Connection


@dataclass(frozen=True)
class _Limits:
    max_rows: int
    allow_service: tuple[str, ...]


def _evaluate(store: RegistryStore, query: str, accept: str | None, limits: _Limits) -> Reply:
    """One query's reply; an exception becomes a status and a line, never its text for a 500.

    The SSRF check runs here, not in the server: it costs a second or so per megabyte of query.
    """
    reason = refusal(query, limits.allow_service)
    if reason is not None:
        return Reply.plain(HTTPStatus.BAD_REQUEST, reason)
    try:
        return reply(store.execute(query), accept, limits.max_rows)
    except QueryError as exc:
        return Reply.plain(HTTPStatus.BAD_REQUEST, exc.what)
    except FedsimError as exc:
        return Reply.plain(HTTPStatus.BAD_REQUEST, exc.line())
    except Exception:  # a store's evaluation error may quote anything (a remote body): log it
        _LOG.exception("SPARQL endpoint: the store failed evaluating a query")
        return Reply.plain(
            HTTPStatus.INTERNAL_SERVER_ERROR,
            "the store failed evaluating the query; the server's log has the details",
        )


def _serve_queries(conn: Connection, store: RegistryStore, limits: _Limits) -> None:
    """A worker's life: (query, accept) in, Reply out, until the server closes the pipe."""
    if isinstance(store, OxigraphStore) and store.path is not None:
        # RocksDB's background threads did not survive the fork: open the folder afresh
        store = OxigraphStore(store.path, read_only=True)
    while True:
        try:
            query, accept = conn.recv()
        except (EOFError, OSError):
            return
        conn.send(_evaluate(store, query, accept, limits))


def _forked(body: Callable[..., None], *args: object) -> int:
    """Fork; the child runs ``body(*args)`` and leaves with ``os._exit`` (no atexit, no flush of
    the parent's buffers). Returns the child's pid to the parent."""
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's; pipes end us
        body(*args)
    except BaseException:
        _LOG.exception("SPARQL endpoint: a worker process failed")
        code = 1
    finally:
        os._exit(code)


def _zygote(control: Connection, store: RegistryStore, limits: _Limits) -> None:
    """Fork a worker per request on ``control``; pass its pipe back, then its pid."""
    keep = control.fileno()
    os.closerange(3, keep)  # the server's sockets and other descriptors are not ours to hold
    os.closerange(keep + 1, 1 << 16)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # dead workers are reaped by the kernel
    while True:
        try:
            control.recv()
        except (EOFError, OSError):
            return  # the server is gone
        ours, theirs = Pipe()

        def work(ours: Connection = ours, theirs: Connection = theirs) -> None:
            control.close()
            ours.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            _serve_queries(theirs, store, limits)

        pid = _forked(work)
        theirs.close()
        send_handle(control, ours.fileno(), 0)
        control.send(pid)
        ours.close()


class WorkerPool:
    """``size`` worker processes; a query waits up to ``timeout_s`` for one, then runs up to
    ``timeout_s``; the worker of a query that overran or crashed is killed and replaced.
    ``allow_service``: the URL prefixes a SERVICE may query (ontology/endpoint_guard.py)."""

    def __init__(
        self,
        store: RegistryStore,
        size: int,
        timeout_s: float,
        max_rows: int,
        allow_service: tuple[str, ...] = (),
    ) -> None:
        self.size, self.timeout_s = size, timeout_s
        self._control, theirs = Pipe()
        limits = _Limits(max_rows, allow_service)
        self._zygote_pid = _forked(_zygote, theirs, store, limits)
        theirs.close()
        self._lock = threading.Lock()  # one spawn at a time on the control pipe
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._workers: set[_Worker] = set()
        self._closed = False
        for _ in range(size):
            self._idle.put(self._spawn())

    def pids(self) -> list[int]:
        """The live workers' process ids."""
        with self._lock:
            return sorted(w.pid for w in self._workers)

    def run(self, query: str, accept: str | None) -> Reply:
        worker = self._take()
        if worker is None:
            return Reply.plain(
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"all {self.size} query workers stayed busy for {self.timeout_s:g} s; retry later",
            )
        try:
            worker.conn.send((query, accept))
            if worker.conn.poll(self.timeout_s):
                answer: Reply = worker.conn.recv()
                self._idle.put(worker)
                return answer
        except (EOFError, OSError):
            self._replace(worker)
            _LOG.error("SPARQL endpoint: worker %d died on a query; replaced", worker.pid)
            return Reply.plain(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                "the store crashed on this query (its worker process died and was replaced); "
                "the endpoint goes on serving other queries",
            )
        except BaseException:
            self._replace(worker)
            raise
        self._replace(worker)
        return Reply.plain(
            HTTPStatus.SERVICE_UNAVAILABLE,
            f"the query ran past the endpoint's {self.timeout_s:g} s limit and was cancelled; "
            "narrow it (LIMIT, more bound terms) or ask for a longer timeout",
        )

    def _take(self) -> _Worker | None:
        """An idle worker that is still alive (one that died idle is replaced), or None."""
        deadline = time.monotonic() + self.timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                worker = self._idle.get(timeout=left)
            except queue.Empty:
                return None
            if not worker.conn.poll(0):  # an idle worker's pipe is readable only at its end
                return worker
            self._replace(worker)
        return None

    def _spawn(self) -> _Worker:
        with self._lock:
            self._control.send(None)
            fd = recv_handle(self._control)
            worker = _Worker(self._control.recv(), Connection(fd))
            self._workers.add(worker)
        return worker

    def _replace(self, worker: _Worker) -> None:
        """Kill ``worker`` (cancelling what it runs) and put a fresh one in its place."""
        with self._lock:
            self._workers.discard(worker)
        _kill(worker)
        if self._closed:
            return
        try:
            self._idle.put(self._spawn())
        except (EOFError, OSError):
            _LOG.error("SPARQL endpoint: cannot start a query worker; the pool shrinks by one")

    def close(self) -> None:
        """Stop every worker and the zygote; a query still running is killed."""
        self._closed = True
        with self._lock:
            workers, self._workers = list(self._workers), set()
            self._control.close()
        for worker in workers:
            _kill(worker)
        deadline = time.monotonic() + _REAP_S
        while os.waitpid(self._zygote_pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(self._zygote_pid, signal.SIGKILL)
                os.waitpid(self._zygote_pid, 0)
                break
            time.sleep(0.01)


def _kill(worker: _Worker) -> None:
    with contextlib.suppress(ProcessLookupError):  # it died on its own
        os.kill(worker.pid, signal.SIGKILL)
    worker.conn.close()
