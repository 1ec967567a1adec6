"""The SPARQL endpoint under concurrent clients on loopback: throughput, latency and failures.

A server (``fedsim registry serve``'s code: catalog + a synthetic fleet in an Oxigraph store,
``--workers`` query processes) runs in a child process; the parent plays N clients at once for
``--seconds`` each, every client a thread that alternates the capability match
(``queries/model-devices.rq`` for mlp-100.kws, its binding written in as ``VALUES``, as
``fedsim registry query`` binds it) and a small query (one device by name), each on a new
connection (as SPARQLWrapper and urllib do). The table gives, per client count and query, the
answers per second, p50 and p95 latency and the failures (any answer but 200, or none in 30 s).

    .venv/bin/python -m benchmarks.endpoint [--clients 1 4 16] [--seconds 8] [--devices 10000]

About 35 s with the defaults. Prints a table and writes ``<out>/endpoint.md``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from benchmarks import publish
from ontology.registry import QUERY_DIR
from ontology.terms import rdf_term, with_values

ROOT = Path(__file__).resolve().parents[1]
MODEL = "mlp-100.kws"
PREFIX = "PREFIX fedsim: <https://w3id.org/fedsim/vocab#>\n"
QUERIES = {
    "match": with_values(
        (QUERY_DIR / "model-devices.rq").read_text(encoding="utf-8"),
        {"modelName": rdf_term("modelName", MODEL)},
    ),
    "lookup": PREFIX + 'SELECT ?d WHERE { ?d fedsim:deviceName "synth-000042" }',
}
CLIENT_TIMEOUT_S = 30.0
Outcome = tuple[str, float, str]  # query, seconds, HTTP status or the error's name


def _serve(devices: int, workers: int, timeout_s: float, max_rows: int) -> None:
    """The child: serve a fleet until stdin closes; the URL is the first line on stdout."""
    from ontology.endpoint import serve
    from ontology.registry import CATALOG_DIR
    from ontology.store import open_store
    from ontology.synthetic import synthetic_fleet

    store = open_store("oxigraph")
    store.load(sorted(CATALOG_DIR.glob("*.ttl")))
    store.add_turtle(synthetic_fleet(devices, seed=0))
    with serve(store, workers=workers, timeout_s=timeout_s, max_rows=max_rows) as server:
        print(server.url, flush=True)
        sys.stdin.read()


def _ask(url: str, name: str) -> Outcome:
    start = time.perf_counter()
    try:
        request = f"{url}?{urllib.parse.urlencode({'query': QUERIES[name]})}"
        with urllib.request.urlopen(request, timeout=CLIENT_TIMEOUT_S) as response:
            response.read()
            outcome = str(response.status)
    except urllib.error.HTTPError as error:
        outcome = str(error.code)
    except OSError as error:  # refused, reset or timed out: no HTTP answer
        outcome = type(error).__name__
    return name, time.perf_counter() - start, outcome


def _client(url: str, until: float, first: int, out: list[Outcome]) -> None:
    names = list(QUERIES)
    i = first
    while time.perf_counter() < until:
        out.append(_ask(url, names[i % len(names)]))
        i += 1


def _load(url: str, clients: int, seconds: float) -> tuple[float, list[Outcome]]:
    """(wall seconds, outcomes) of ``clients`` threads asking for ``seconds``; the last answers
    started before the deadline are waited for and counted."""
    results: list[Outcome] = []  # list.append is atomic: no lock needed
    until = time.perf_counter() + seconds
    threads = [
        threading.Thread(target=_client, args=(url, until, c, results)) for c in range(clients)
    ]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start, results


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _lines(clients: int, wall: float, outcomes: list[Outcome]) -> list[str]:
    lines = []
    for name in QUERIES:
        mine = [(s, o) for q, s, o in outcomes if q == name]
        if not mine:
            continue
        seconds = [s for s, _ in mine]
        failed = sum(1 for _, o in mine if o != "200")
        others = sorted({o for _, o in mine if o != "200"})
        lines.append(
            f"| {clients} | {name} | {len(mine)} | {len(mine) / wall:.1f} | "
            f"{statistics.median(seconds) * 1e3:.1f} | {_quantile(seconds, 0.95) * 1e3:.1f} | "
            f"{failed}{' (' + ', '.join(others) + ')' if others else ''} |"
        )
    total = len(outcomes) / wall
    lines.append(f"| {clients} | all | {len(outcomes)} | {total:.1f} | | | |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--seconds", type=float, default=8.0, help="per client count")
    parser.add_argument("--workers", type=int, default=4, help="query worker processes")
    parser.add_argument("--timeout", type=float, default=10.0, help="the query timeout, s")
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--max-rows", type=int, default=100_000, help="rows an answer may hold")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench-endpoint")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        _serve(args.devices, args.workers, args.timeout, args.max_rows)
        return 0
    command = [sys.executable, "-m", "benchmarks.endpoint", "--serve"]
    command += ["--devices", str(args.devices), "--workers", str(args.workers)]
    command += ["--timeout", str(args.timeout), "--max-rows", str(args.max_rows)]
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
    ) as server:
        assert server.stdout is not None
        assert server.stdin is not None
        url = server.stdout.readline().strip()
        if not url:
            raise SystemExit("the endpoint did not start; run with --serve to see why")
        for name in QUERIES:  # warm-up: a worker has answered each once
            _ask(url, name)
        runs = [(clients, *_load(url, clients, args.seconds)) for clients in args.clients]
        server.stdin.close()
    lines = [
        f"## SPARQL endpoint on loopback: {args.devices:,} devices (Oxigraph), "
        f"{args.workers} query workers, {args.seconds:g} s per client count, "
        f"a new connection per query",
        "",
        "| clients | query | answers | per s | p50 ms | p95 ms | failed |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for clients, wall, outcomes in runs:
        lines += _lines(clients, wall, outcomes)
    publish("\n".join(lines), args.out, "endpoint.md")
    failed = [o for clients, _, outcomes in runs for _, _, o in outcomes if o != "200"]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
