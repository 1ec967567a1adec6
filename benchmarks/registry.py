"""The registry at fleet scale: rdflib in memory against Oxigraph (design §8).

For synthetic fleets of 1k, 10k and 100k devices (``--quick``: 1k and 10k), each backend loads
the catalog and the fleet, then answers the inventory (devices by profile and site) and the
capability match (devices that can run a model) three ways: as ``queries/model-devices.rq``
states it, as the grouped form written here (``OPTIONAL`` + ``GROUP BY``/``HAVING``, which the .rq
adopted after its first, nested ``FILTER NOT EXISTS`` form proved quadratic on Oxigraph 0.5), and
as ``FleetRegistry.devices_for`` answers it: from the capability index (ontology/capability.py),
read once after the load ("index" column) and then matched per model ("match index"; rows as
``DeviceMatch`` objects). The three give the same rows. Each (backend, size) runs in a fresh child
process, so peak RSS is its own; each query runs under a time limit, and one that ran out is
skipped at the larger sizes.

    .venv/bin/python -m benchmarks.registry [--quick] [--shacl] [--timeout S] [--json PATH]
    .venv/bin/python -m benchmarks.registry --sizes 100000 --backends oxigraph --phases index
    .venv/bin/python -m benchmarks.registry --child BACKEND N [--skip NAME ...]   # one, raw

``--phases`` keeps the named phases only (inventory, match .rq, match grouped, index, shacl;
``index`` is the index and its match).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import psutil

from ontology.fleet_registry import FleetRegistry
from ontology.registry import CATALOG_DIR, QUERY_DIR
from ontology.store import RegistryStore, open_store
from ontology.synthetic import synthetic_fleet, synthetic_model

ROOT = Path(__file__).resolve().parents[1]
RESULT_MARK = "bench-phase: "  # each child stdout line with a result: this mark, then JSON
SIZES, QUICK_SIZES = (1_000, 10_000, 100_000), (1_000, 10_000)
BACKENDS = {  # name -> (store kind, on disk)
    "memory": ("memory", False),
    "oxigraph": ("oxigraph", False),
    "oxigraph-disk": ("oxigraph", True),
}
SEED = 0
MODEL = "mlp-100.kws"  # needs a microphone, 8 KiB RAM, 789 KB flash (catalog/models.ttl)
FALLBACK_MODEL = synthetic_model(MODEL, ["Microphone"], 8240, 789248)  # if the catalog lacks it
TIMED_OUT = 3  # the child's exit code after a query ran out of time
REPEAT_UNDER_S = 1.0  # queries faster than this run 3 times, best kept
PREFIX = (
    "PREFIX fedsim: <https://w3id.org/fedsim/vocab#>\nPREFIX sosa: <http://www.w3.org/ns/sosa/>\n"
)
INVENTORY = (
    PREFIX
    + """SELECT ?profile ?site (COUNT(?device) AS ?devices) WHERE {
  ?device a fedsim:Device ; fedsim:hasProfile/fedsim:profileName ?profile ; fedsim:fleetName ?site .
} GROUP BY ?profile ?site"""
)
# model-devices.rq's rows, without its nested FILTER NOT EXISTS (which Oxigraph 0.5 evaluates in
# time quadratic in the fleet): each required sensor kind is looked up with OPTIONAL, and a device
# is kept when every kind was found (or the model needs none).
MATCH_GROUPED = (
    PREFIX
    + """SELECT ?name ?profile ?fleet ?ram ?flash ?train WHERE {
  ?model fedsim:modelName ?modelName ;
         fedsim:inferenceRamBytes ?needRam ; fedsim:inferenceFlashBytes ?needFlash ;
         fedsim:trainRamBytes ?trainRam ; fedsim:headTrainRamBytes ?headRam .
  ?device a fedsim:Device ; fedsim:deviceName ?name ; fedsim:hasProfile ?p .
  ?p fedsim:profileName ?profile ; fedsim:sramBytes ?sram ; fedsim:flashBytes ?pflash .
  OPTIONAL { ?device fedsim:freeSramBytes ?freeRam }
  OPTIONAL { ?device fedsim:freeFlashBytes ?freeFlash }
  OPTIONAL { ?device fedsim:fleetName ?f }
  BIND (COALESCE(?freeRam, ?sram) AS ?ram)
  BIND (COALESCE(?freeFlash, ?pflash) AS ?flash)
  BIND (COALESCE(?f, "") AS ?fleet)
  FILTER (?ram >= ?needRam && ?flash >= ?needFlash)
  OPTIONAL { ?model fedsim:requiresSensor ?kind }
  OPTIONAL { ?device sosa:hosts ?s . ?s a ?kind }
  OPTIONAL { ?p sosa:hosts ?ps . ?ps a ?kind }
  BIND (IF(!BOUND(?kind) || BOUND(?s) || BOUND(?ps), 1, 0) AS ?hosted)
  BIND (IF(?ram >= ?trainRam, "full", IF(?ram >= ?headRam, "head", "no")) AS ?train)
}
GROUP BY ?name ?profile ?fleet ?ram ?flash ?train
HAVING (MIN(?hosted) = 1)
ORDER BY ?name"""
)
QUERIES = {"inventory": INVENTORY, "match .rq": "", "match grouped": MATCH_GROUPED}
PHASES = [*QUERIES, "index", "shacl"]
TARGETS = "match over 100k < 0.5 s, load 100k < 10 s, registry RSS < 1 GB at 100k"


def _match_rq() -> str:
    path = QUERY_DIR / "model-devices.rq"
    return path.read_text(encoding="utf-8") if path.exists() else MATCH_GROUPED


def _rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _report(phase: str, **values: Any) -> None:
    print(RESULT_MARK + json.dumps({"phase": phase, **values}), flush=True)


def _within(fn: Callable[[], int], timeout_s: float) -> tuple[float, int] | None:
    """(seconds, rows) of one call, or None when it ran past ``timeout_s`` (left running)."""
    outcome: list[tuple[float, int]] = []

    def work() -> None:
        start = time.perf_counter()
        rows = fn()
        outcome.append((time.perf_counter() - start, rows))

    worker = threading.Thread(target=work, daemon=True)  # the child exits without it
    worker.start()
    worker.join(timeout_s)
    return outcome[0] if outcome else None


def _time_query(store: RegistryStore, query: str, timeout_s: float) -> dict[str, Any]:
    """Rows are converted to Python values, as callers get them; a fast query runs 3 times."""
    bindings = {"modelName": MODEL} if "?modelName" in query else None
    times: list[float] = []
    rows = 0
    while not times or (len(times) < 3 and max(times) < REPEAT_UNDER_S):
        timed = _within(lambda: len(store.select(query, bindings)), timeout_s)
        if timed is None:
            return {"status": f"timeout (>{timeout_s:g} s)"}
        times.append(timed[0])
        rows = timed[1]
    return {"status": "ok", "s": min(times), "rows": rows}


def _phase(name: str, measure: Callable[[], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: measure()}


def _index(store: RegistryStore, timeout_s: float) -> dict[str, dict[str, Any]]:
    """The capability index's build, then ``devices_for`` as callers get it (best of 3)."""
    registry = FleetRegistry(store)
    built = _within(lambda: len(registry.capabilities().entries), timeout_s)
    if built is None:
        return {"index": {"status": f"timeout (>{timeout_s:g} s)"}}
    times: list[float] = []
    rows = 0
    for _ in range(3):
        timed = _within(lambda: len(registry.devices_for(MODEL)), timeout_s)
        if timed is None:
            ran_out = {"status": f"timeout (>{timeout_s:g} s)"}
            return {"index": {"status": "ok", "s": built[0]}, "match index": ran_out}
        times.append(timed[0])
        rows = timed[1]
    return {
        "index": {"status": "ok", "s": built[0], "rows": built[1]},
        "match index": {"status": "ok", "s": min(times), "rows": rows},
    }


def _shacl_s(paths: list[Path], timeout_s: float) -> dict[str, Any]:
    from rdflib import Graph  # only with --shacl

    from ontology.validate import validate

    graph = Graph()
    for path in paths:
        graph.parse(path, format="turtle")
    timed = _within(lambda: len(validate(graph)), timeout_s)
    if timed is None:
        return {"status": f"timeout (>{timeout_s:g} s)"}
    return {"status": "ok", "s": timed[0], "rows": timed[1]}


def child(backend: str, n: int, skip: list[str], timeout_s: float, shacl: bool) -> int:
    """Measure one backend on one fleet size; each phase is one stdout line (see RESULT_MARK).

    A query past ``timeout_s`` ends the child at once (exit ``TIMED_OUT``): its thread cannot be
    stopped and would slow what comes next, so the parent starts a new child that skips it.
    """
    _report("baseline", rss_mb=_rss_mb())
    scratch = Path(tempfile.mkdtemp(prefix="fedsim-bench-registry-"))
    try:
        fleet = scratch / "fleet.ttl"
        fleet.write_text(synthetic_fleet(n, SEED), encoding="utf-8")
        paths = [*sorted(CATALOG_DIR.glob("*.ttl")), fleet]
        kind, on_disk = BACKENDS[backend]
        store = open_store(kind, scratch / "db" if on_disk else None)  # type: ignore[arg-type]
        start = time.perf_counter()
        store.load(paths)
        if not store.ask(PREFIX + f'ASK {{ ?m fedsim:modelName "{MODEL}" }}'):
            store.add_turtle(FALLBACK_MODEL, "benchmark model")
        _report("load", s=time.perf_counter() - start, triples=store.triples_count())
        _report("loaded", rss_mb=_rss_mb())
        phases: dict[str, Callable[[], dict[str, dict[str, Any]]]] = {
            name: partial(_phase, name, partial(_time_query, store, query, timeout_s))
            for name, query in {**QUERIES, "match .rq": _match_rq()}.items()
        }
        phases["index"] = partial(_index, store, timeout_s)
        if shacl and backend == "memory":
            phases["shacl"] = partial(_phase, "shacl", lambda: _shacl_s(paths, timeout_s))
        for name, measure in phases.items():
            if name in skip:
                continue
            for phase, result in measure().items():
                _report(phase, **result)
                if result["status"] != "ok":
                    _report("end", peak_rss_mb=_peak_rss_mb())
                    shutil.rmtree(scratch, ignore_errors=True)
                    os._exit(TIMED_OUT)  # not sys.exit: that would wait for the running query
        store.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    _report("end", peak_rss_mb=_peak_rss_mb())
    return 0


@dataclass
class Row:
    devices: int
    backend: str
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)
    note: str = ""

    def cell(self, phase: str) -> str:
        got = self.phases.get(phase)
        if got is None:
            return "–"
        if got.get("status", "ok") != "ok":
            return str(got["status"])
        rows = f" ({got['rows']:,})" if phase.startswith("match") and "rows" in got else ""
        return f"{got['s']:.3f}{rows}"


def _run_child(backend: str, n: int, skip: list[str], args: argparse.Namespace) -> Row:
    cmd = [sys.executable, "-m", "benchmarks.registry", "--child", backend, str(n)]
    cmd += ["--timeout", str(args.timeout)] + (["--shacl"] if args.shacl else [])
    cmd += [a for name in skip for a in ("--skip", name)]
    row = Row(n, backend)
    try:
        done = subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=args.child_timeout
        )
        out, err, code = done.stdout, done.stderr, done.returncode
    except subprocess.TimeoutExpired as expired:
        out = expired.stdout.decode() if isinstance(expired.stdout, bytes) else ""
        err, code = "", None
        row.note = f"child killed after {args.child_timeout:g} s"
    for line in out.splitlines():
        if line.startswith(RESULT_MARK):
            values = json.loads(line[len(RESULT_MARK) :])
            row.phases[values.pop("phase")] = values
    if code not in (0, TIMED_OUT, None):
        row.note = "failed: " + (err.strip().splitlines() or ["(no output)"])[-1][:160]
    return row


def _measure(backend: str, n: int, skip: list[str], args: argparse.Namespace) -> Row:
    """One (backend, size), in as many children as it takes: each timeout is skipped next time.

    Peak RSS is the largest of the children's.
    """
    row, skip = Row(n, backend), list(skip)
    while True:
        run = _run_child(backend, n, skip, args)
        peak = max(p.get("end", {}).get("peak_rss_mb", 0.0) for p in (row.phases, run.phases))
        row.phases.update(run.phases)
        row.phases["end"] = {"peak_rss_mb": peak}
        row.note = run.note
        timed_out = [k for k, v in run.phases.items() if v.get("status", "ok") != "ok"]
        if run.note or not timed_out:
            return row
        skip += timed_out


COLUMNS = (
    "devices",
    "backend",
    "triples",
    "load s",
    "inventory s",
    "match .rq s (rows)",
    "match grouped s (rows)",
    "index s",
    "match index s (rows)",
    "SHACL s",
    "RSS MB (baseline / loaded / peak)",
)
RSS_PHASES = (("baseline", "rss_mb"), ("loaded", "rss_mb"), ("end", "peak_rss_mb"))


def table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|---:|---|" + "---:|" * (len(COLUMNS) - 2)]
    for row in rows:
        rss = [row.phases.get(phase, {}).get(key) for phase, key in RSS_PHASES]
        cells = [
            f"{row.devices:,}",
            row.backend + (f" ({row.note})" if row.note else ""),
            f"{row.phases['load']['triples']:,}" if "load" in row.phases else "–",
            row.cell("load"),
            row.cell("inventory"),
            row.cell("match .rq"),
            row.cell("match grouped"),
            row.cell("index"),
            row.cell("match index"),
            row.cell("shacl"),
            " / ".join("–" if v is None else f"{v:.0f}" for v in rss),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("met" if ok else "NOT met")


def targets(rows: list[Row]) -> str:
    """design §8/§12's registry targets at 100k devices, per backend."""
    parts = []
    for backend in BACKENDS:
        row = next((r for r in rows if (r.devices, r.backend) == (100_000, backend)), None)
        if row is None:
            parts.append(f"{backend}: not measured at 100k")
            continue
        matches = [row.phases.get(m, {}) for m in ("match .rq", "match grouped", "match index")]
        best = min((m["s"] for m in matches if m.get("status") == "ok"), default=None)
        ran_out = any(str(m.get("status", "")).startswith(("timeout", "skipped")) for m in matches)
        match_ok = best < 0.5 if best is not None else (False if ran_out else None)
        load = row.phases.get("load", {}).get("s")
        peak = row.phases.get("end", {}).get("peak_rss_mb")
        parts.append(
            f"{backend}: match < 0.5 s {_verdict(match_ok)}"
            f" (best {'none in time' if best is None else f'{best:.2f} s'}), load < 10 s "
            f"{_verdict(None if load is None else load < 10)}, RSS < 1 GB "
            f"{_verdict(None if peak is None else peak < 1024)}"
        )
    return f"Targets ({TARGETS}): " + "; ".join(parts) + "."


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.registry", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="only 1k and 10k devices")
    parser.add_argument("--sizes", type=int, nargs="+", help="fleet sizes (default 1k 10k 100k)")
    parser.add_argument("--backends", nargs="+", choices=list(BACKENDS), help="default: all")
    parser.add_argument("--phases", nargs="+", choices=PHASES, help="default: all")
    parser.add_argument("--shacl", action="store_true", help="also time SHACL (memory, ≤ 10k)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per query")
    parser.add_argument("--child-timeout", type=float, default=900.0, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    parser.add_argument("--child", nargs=2, metavar=("BACKEND", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--skip", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child and (args.child[0] not in BACKENDS or not args.child[1].isdigit()):
        parser.error(f"--child BACKEND N: got {' '.join(args.child)}; backends: {BACKENDS}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    if args.child:
        return child(args.child[0], int(args.child[1]), args.skip, args.timeout, args.shacl)
    rows: list[Row] = []
    timed_out: dict[str, dict[str, int]] = {b: {} for b in BACKENDS}  # phase -> fleet size
    unwanted = set(PHASES) - set(args.phases or PHASES)
    for n in args.sizes or (QUICK_SIZES if args.quick else SIZES):
        for backend in args.backends or BACKENDS:
            skipped = set(timed_out[backend]) | unwanted | ({"shacl"} if n > 10_000 else set())
            skip = sorted(skipped | ({"match index"} if "index" in skipped else set()))
            print(f"{n:,} devices, {backend}: started", file=sys.stderr, flush=True)
            row = _measure(backend, n, skip, args)
            for name, size in timed_out[backend].items():
                row.phases[name] = {"status": f"skipped (>{args.timeout:g} s at {size:,})"}
            for name, got in row.phases.items():
                if str(got.get("status", "")).startswith("timeout"):
                    timed_out[backend].setdefault(name, n)
            print(f"{n:,} devices, {backend}: {row.phases}", file=sys.stderr, flush=True)
            rows.append(row)
    print(f"Model {MODEL}; match rows are devices that can run it; seed {SEED}.\n")
    print(table(rows))
    print()
    print(targets(rows))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
