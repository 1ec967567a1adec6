"""A read-only SPARQL 1.1 Protocol endpoint over a registry store, on the standard library only.

    server = serve(open_store("oxigraph"))      # server.url: http://127.0.0.1:<port>/sparql
    ...
    server.shutdown()

Queries come as ``GET /sparql?query=…``, as a form ``POST`` (``query=…``) or as a ``POST`` of
``application/sparql-query``; results as ontology/endpoint_formats.py negotiates them.

Refused, with a plain-text reason: updates (``update=`` or ``application/sparql-update``: 403),
malformed queries (400, the parser's message), queries that would make the store fetch a remote
resource (``SERVICE`` not under an ``allow_service`` prefix, ``FROM``/``FROM NAMED``: 400,
ontology/endpoint_guard.py), types the client cannot accept (406). Results longer than
``max_rows`` rows (or triples) are cut there and say so in ``X-Fedsim-Truncated: <rows kept>``.

Limits (README "The SPARQL endpoint" has the threat model):
- queries run in ``workers`` supervised processes (ontology/endpoint_workers.py): one waits up to
  ``timeout_s`` for a free worker, then runs up to ``timeout_s``; past it, its worker is killed
  and replaced (503). A query that crashes the store costs its request a 500, never the server.
- a connection has ``client_timeout_s`` to deliver a whole request (line, headers, body) from
  when it opens or its previous answer was sent: a silent, trickling (slowloris) or short-bodied
  client is cut off (408 where it was mid-request).
- at most ``max_connections`` connections are served at once; more are answered 503 at once;
  ``backlog`` connections may wait in the kernel's listen queue to be accepted.
"""

from __future__ import annotations

import io
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from ontology.endpoint_formats import TRUNCATED_HEADER, Reply
from ontology.endpoint_guard import allowed_prefix
from ontology.endpoint_workers import WorkerPool
from ontology.store import RegistryStore

__all__ = ["ENDPOINT_PATH", "TRUNCATED_HEADER", "SparqlServer", "serve"]

ENDPOINT_PATH = "/sparql"
MAX_BODY_BYTES = 1 << 20  # a POSTed query longer than this is refused (413)
_LOG = logging.getLogger(__name__)


class _HttpError(Exception):
    """An answer other than 200, decided in the server process: its status and a reason."""

    def __init__(self, status: HTTPStatus, reason: str) -> None:
        super().__init__(reason)
        self.reply = Reply.plain(status, reason)


class _DeadlineReader(io.RawIOBase):
    """A connection's reading side that gives up at the handler's deadline, however the bytes
    trickle in: each read may wait only for what is left of the time."""

    def __init__(self, sock: socket.socket, handler: _Handler) -> None:
        self._sock, self._handler = sock, handler

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self._handler.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request did not arrive in time")
        self._sock.settimeout(left)
        return self._sock.recv_into(buffer)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a request stuck on a slow client never blocks shutdown
    pool: WorkerPool
    client_timeout_s: float
    slots: threading.BoundedSemaphore  # one per connection served

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            _refuse_busy(request)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that reset or vanished mid-request: not worth a traceback on the console
        _LOG.debug("SPARQL endpoint: connection from %s failed", client_address, exc_info=True)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


def _refuse_busy(request: socket.socket) -> None:
    body = b"too many connections; retry later\n"
    head = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    head += f"Content-Length: {len(body)}\r\nConnection: close\r\nRetry-After: 1\r\n\r\n"
    try:
        request.settimeout(1.0)
        request.sendall(head.encode() + body)
    except OSError:
        pass


class _Handler(BaseHTTPRequestHandler):
    server_version = "fedsim-sparql/2"
    protocol_version = "HTTP/1.1"  # keep-alive, bounded by the client timeout
    deadline = 0.0

    @property
    def _server(self) -> _Server:
        return cast(_Server, self.server)

    def setup(self) -> None:
        super().setup()
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, self))

    def handle_one_request(self) -> None:
        self.deadline = time.monotonic() + self._server.client_timeout_s
        super().handle_one_request()  # a TimeoutError while reading closes the connection

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        self._guarded(lambda: self._query(parse_qs(url.query, keep_blank_values=True)), url.path)

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        self._guarded(lambda: self._post(parse_qs(url.query, keep_blank_values=True)), url.path)

    def do_PUT(self) -> None:
        error = _HttpError(HTTPStatus.METHOD_NOT_ALLOWED, "read-only endpoint: use GET or POST")
        self._send(error.reply, {"Allow": "GET, POST"})

    def do_DELETE(self) -> None:
        self.do_PUT()

    def do_PATCH(self) -> None:
        self.do_PUT()

    def _guarded(self, action: Callable[[], Reply], path: str) -> None:
        try:
            if path != ENDPOINT_PATH:
                raise _HttpError(
                    HTTPStatus.NOT_FOUND, f"no such resource; the endpoint is {ENDPOINT_PATH}"
                )
            answer = action()
        except _HttpError as error:
            answer = error.reply
        except Exception:
            _LOG.exception("SPARQL endpoint: a request failed")
            answer = Reply.plain(
                HTTPStatus.INTERNAL_SERVER_ERROR, "internal error; the server's log has the details"
            )
        self._send(answer)

    def _post(self, params: dict[str, list[str]]) -> Reply:
        content_type = self.headers.get_content_type()
        if content_type == "application/sparql-update":
            raise _HttpError(HTTPStatus.FORBIDDEN, "read-only endpoint: SPARQL updates are refused")
        if content_type not in ("application/x-www-form-urlencoded", "application/sparql-query"):
            raise _HttpError(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                f"cannot read a {content_type} body; send application/x-www-form-urlencoded "
                "(query=...) or application/sparql-query",
            )
        try:
            body = self._body().decode(self.headers.get_content_charset("utf-8"))
        except (LookupError, UnicodeDecodeError) as exc:
            reason = exc.reason if isinstance(exc, UnicodeDecodeError) else "unknown charset"
            raise _HttpError(HTTPStatus.BAD_REQUEST, f"cannot decode the body: {reason}") from None
        if content_type == "application/x-www-form-urlencoded":
            form = parse_qs(body, keep_blank_values=True)
            return self._query({**params, **{k: params.get(k, []) + v for k, v in form.items()}})
        if "query" in params:
            raise _HttpError(HTTPStatus.BAD_REQUEST, "query both in the URL and in the body")
        return self._query({**params, "query": [body]})

    def _body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise _HttpError(HTTPStatus.LENGTH_REQUIRED, "a POST needs a Content-Length")
        if int(length) > MAX_BODY_BYTES:
            raise _HttpError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"query over {MAX_BODY_BYTES} bytes"
            )
        try:
            body = self.rfile.read(int(length))
        except TimeoutError:
            raise _HttpError(
                HTTPStatus.REQUEST_TIMEOUT,
                f"the body did not arrive within {self._server.client_timeout_s:g} s",
            ) from None
        if len(body) != int(length):
            raise _HttpError(HTTPStatus.BAD_REQUEST, "the body is shorter than its Content-Length")
        return body

    def _query(self, params: dict[str, list[str]]) -> Reply:
        if "update" in params:
            raise _HttpError(HTTPStatus.FORBIDDEN, "read-only endpoint: SPARQL updates are refused")
        if any(params.get(p) for p in ("default-graph-uri", "named-graph-uri")):
            raise _HttpError(
                HTTPStatus.BAD_REQUEST, "dataset parameters are not supported: one default graph"
            )
        queries = params.get("query", [])
        if len(queries) != 1:
            raise _HttpError(
                HTTPStatus.BAD_REQUEST, f"expected one query parameter, got {len(queries)}"
            )
        return self._server.pool.run(queries[0], self.headers.get("Accept"))

    def _send(self, answer: Reply, extra: dict[str, str] | None = None) -> None:
        self.connection.settimeout(self._server.client_timeout_s)  # a client that never reads
        if answer.status != HTTPStatus.OK:
            self.close_connection = True  # a refused POST's body may still be unread
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body)))
        for name, value in {**answer.headers, **(extra or {})}.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(answer.body)

    def log_message(self, format: str, *args: object) -> None:
        _LOG.debug("%s " + format, self.address_string(), *args)


class SparqlServer:
    """A running endpoint: query ``url``; ``shutdown()`` stops it (also on leaving a ``with``)."""

    def __init__(self, httpd: _Server) -> None:
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, name="fedsim-sparql-server", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}{ENDPOINT_PATH}"

    def worker_pids(self) -> list[int]:
        """The query worker processes alive now."""
        return self._httpd.pool.pids()

    def shutdown(self) -> None:
        """Stop serving, close the socket and stop the workers (a running query is killed)."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
        self._httpd.pool.close()

    def __enter__(self) -> SparqlServer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.shutdown()


def serve(
    store: RegistryStore,
    host: str = "127.0.0.1",
    port: int = 0,
    timeout_s: float = 10.0,
    max_rows: int = 10_000,
    workers: int = 4,
    allow_service: Sequence[str] = (),
    client_timeout_s: float = 10.0,
    max_connections: int = 256,
    backlog: int = 1024,
) -> SparqlServer:
    """Serve ``store`` read-only at ``http://host:port/sparql`` (port 0: a free one) in a thread.

    Call it before starting threads that use ``store``: the workers get the store as it is now.
    """
    limits: dict[str, float] = {
        "workers": workers,
        "max_rows": max_rows,
        "max_connections": max_connections,
    }
    limits |= {"backlog": backlog, "timeout_s": timeout_s, "client_timeout_s": client_timeout_s}
    low = [f"{name} {value:g}" for name, value in limits.items() if not value > 0]
    if low:
        raise ValueError(f"expected positive limits, got {', '.join(low)}")
    allow = tuple(allowed_prefix(prefix) for prefix in allow_service)
    httpd = _Server((host, port), _Handler, bind_and_activate=False)
    httpd.request_queue_size = backlog  # listen(); Linux caps it at net.core.somaxconn
    try:
        httpd.server_bind()
        httpd.server_activate()
        httpd.client_timeout_s = client_timeout_s
        httpd.slots = threading.BoundedSemaphore(max_connections)
        httpd.pool = WorkerPool(store, workers, timeout_s, max_rows, allow)
    except BaseException:
        httpd.server_close()
        raise
    return SparqlServer(httpd)
