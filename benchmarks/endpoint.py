"""The SPARQL endpoint under concurrent load on loopback: throughput, latency and failures.

A server (``fedsim registry serve``'s code: catalog + a synthetic fleet in an Oxigraph store,
``--workers`` query processes) runs in a child process; the parent plays N clients at once, each
a thread sending ``--queries`` queries one after the other, every query on a new connection
(as SPARQLWrapper and urllib do). The queries cycle through a point lookup, an ASK, a sorted page
and the inventory (a GROUP BY over the fleet). A failure is any answer but 200, or no answer
within 30 s. Below the worker limit no query may fail; above it, queries wait for a worker up to
the query timeout, so they should not fail either until the wait passes it.

    .venv/bin/python -m benchmarks.endpoint [--clients 4 50 200] [--queries 20] [--workers 4]

Prints a table and writes ``<out>/endpoint.md``.
"""

from __future__ import annotations

import argparse
import collections
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

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "PREFIX fedsim: <https://w3id.org/fedsim/vocab#>\n"
QUERIES = [
    PREFIX + 'SELECT ?d WHERE { ?d fedsim:deviceName "synth-000042" }',
    PREFIX + "ASK { ?d fedsim:hasProfile ?p }",
    PREFIX + "SELECT ?d ?n WHERE { ?d fedsim:deviceName ?n } ORDER BY ?n LIMIT 20",
    PREFIX + "SELECT ?p (COUNT(?d) AS ?n) WHERE { ?d fedsim:hasProfile ?p } GROUP BY ?p",
]
CLIENT_TIMEOUT_S = 30.0


def _serve(devices: int, workers: int, timeout_s: float) -> None:
    """The child: serve a fleet until stdin closes; the URL is the first line on stdout."""
    from ontology.endpoint import serve
    from ontology.registry import CATALOG_DIR
    from ontology.store import open_store
    from ontology.synthetic import synthetic_fleet

    store = open_store("oxigraph")
    store.load(sorted(CATALOG_DIR.glob("*.ttl")))
    store.add_turtle(synthetic_fleet(devices, seed=0))
    with serve(store, workers=workers, timeout_s=timeout_s) as server:
        print(server.url, flush=True)
        sys.stdin.read()


def _client(url: str, queries: int, offset: int, out: list[tuple[float, str]]) -> None:
    for i in range(queries):
        query = QUERIES[(offset + i) % len(QUERIES)]
        start = time.perf_counter()
        try:
            request = f"{url}?{urllib.parse.urlencode({'query': query})}"
            with urllib.request.urlopen(request, timeout=CLIENT_TIMEOUT_S) as response:
                response.read()
                outcome = str(response.status)
        except urllib.error.HTTPError as error:
            outcome = str(error.code)
        except OSError as error:  # refused, reset or timed out: no HTTP answer
            outcome = type(error).__name__
        out.append((time.perf_counter() - start, outcome))


def _load(url: str, clients: int, queries: int) -> dict[str, float | str]:
    results: list[tuple[float, str]] = []  # list.append is atomic: no lock needed
    threads = [
        threading.Thread(target=_client, args=(url, queries, c, results)) for c in range(clients)
    ]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    latencies = sorted(seconds for seconds, _ in results)
    outcomes = collections.Counter(outcome for _, outcome in results)
    failed = sum(n for outcome, n in outcomes.items() if outcome != "200")
    return {
        "requests": len(results),
        "wall_s": wall,
        "throughput": len(results) / wall,
        "p50_ms": statistics.median(latencies) * 1e3,
        "p99_ms": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1e3,
        "failed": failed,
        "outcomes": ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items())),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[4, 50, 200])
    parser.add_argument("--queries", type=int, default=20, help="per client")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=10.0, help="the query timeout, s")
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench-endpoint")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        _serve(args.devices, args.workers, args.timeout)
        return 0
    command = [sys.executable, "-m", "benchmarks.endpoint", "--serve"]
    command += ["--devices", str(args.devices), "--workers", str(args.workers)]
    command += ["--timeout", str(args.timeout)]
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
    ) as server:
        assert server.stdout is not None
        assert server.stdin is not None
        url = server.stdout.readline().strip()
        if not url:
            raise SystemExit("the endpoint did not start; run with --serve to see why")
        _load(url, args.workers, 2)  # warm-up: every worker answers once
        rows = [(clients, _load(url, clients, args.queries)) for clients in args.clients]
        server.stdin.close()
    lines = [
        f"## SPARQL endpoint on loopback: {args.devices} devices (Oxigraph), "
        f"{args.workers} query workers, {args.queries} queries per client, "
        f"query timeout {args.timeout:g} s",
        "",
        "| clients | requests | wall s | queries/s | p50 ms | p99 ms | failed | answers |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for clients, r in rows:
        lines.append(
            f"| {clients} | {r['requests']} | {r['wall_s']:.1f} | {r['throughput']:.0f} | "
            f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['failed']} | {r['outcomes']} |"
        )
    publish("\n".join(lines), args.out, "endpoint.md")
    below = [r["failed"] for clients, r in rows if clients <= args.workers]
    return 1 if any(below) else 0


if __name__ == "__main__":
    raise SystemExit(main())
