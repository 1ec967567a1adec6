"""Golden outputs of every shipped scenario: the safety net for refactors that must not change
results (issue 22: "after the redesign every one is byte-identical in both execution modes").

Each case is a scenario under ``scenarios/`` cut short by overrides (a few rounds, a smaller
fleet, a tiny pre-training) so that it runs in seconds on the inline engine. Per case,
``tests/golden/<case>/`` holds what the run wrote: ``rounds.jsonl`` and ``devices.csv`` verbatim
(but for the columns in ``MEASURED``) and ``model.sha256.json``, the sha256 of each final tensor's
bytes with its dtype and shape (the arrays themselves would bloat the repository). When both
execution modes write the same files, one set is kept; when they differ, ``<case>/<mode>/`` holds
one set per mode.

Record (or re-record, only when a change of results is *meant*) with the code to freeze::

    FLWR_TELEMETRY_ENABLED=0 .venv/bin/python -m tests.golden record [CASE ...]

``python -m tests.golden check [CASE ...]`` compares without pytest; ``tests/test_golden.py``
is the pytest gate. Pre-trained encoders and backbones are cached by config hash
(``fedsim.core.data.cache_dir``); ``fresh_pretraining`` hides those cache entries so that every
run pre-trains again and the goldens cover the pre-training code too.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "scenarios"
GOLDEN = Path(__file__).resolve().parent / "golden"
Mode = Literal["per-device", "cohort"]
MODES: tuple[Mode, ...] = ("per-device", "cohort")
FILES = ("rounds.jsonl", "devices.csv", "model.sha256.json")
# devices.csv columns an attached device fills in from its own clock: wall time, never golden
MEASURED = ("measured_s", "measured_mj")
# pre-trained weights cached by config hash (fedsim.core.algorithms: pretrain, backbone)
PRETRAINED = ("pretrain-*", "backbone-*")


@dataclass(frozen=True)
class Case:
    """A shipped scenario, shortened: ``changes`` are dotted overrides (``with_changes``)."""

    scenario: str  # relative to scenarios/
    changes: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""


_INLINE = {"execution.engine": "inline"}
_META = {"rounds": 4, "evaluation.every": 2, **_INLINE}
_TINY_ENCODER = {"episodes": 4}
_TINY_BACKBONE = {"dataset": "fashion-mnist", "steps": 4, "dim": 16, "depth": 1}
_FEDINS = {"rounds": 2, "evaluation.every": 1, "algorithm.backbone": _TINY_BACKBONE, **_INLINE}

CASES: dict[str, Case] = {
    "quickstart": Case("quickstart.yaml", {"rounds": 3, **_INLINE}),
    "quickstart-fedprox": Case("quickstart-fedprox.yaml", {"rounds": 3, **_INLINE}),
    "attached-mcu": Case(
        "attached-mcu.yaml",
        {
            "rounds": 3,
            "fleet.groups": [
                {"profile": "rpi4", "count": 2},
                {"profile": "nano33-ble-sense", "count": 3},
            ],
            **_INLINE,
        },
        "the serial-attached Nano is replaced by a simulated one (no board or emulator needed); "
        "tests/test_attached.py covers the bridge",
    ),
    "building-gateways": Case("building-gateways.yaml", {"rounds": 2, **_INLINE}),
    "fleet-1m": Case(
        "fleet-1m.yaml",
        {
            "rounds": 2,
            "evaluation.every": 1,
            "clients_per_round": 20,
            "fleet.groups": [
                {
                    "profile": "rpi-zero2w",
                    "count": 60,
                    "faults": {"crash_prob": 0.02},
                    "availability": {"kind": "markov", "mean_on_s": 600, "mean_off_s": 300},
                },
                {
                    "profile": "rpi4",
                    "count": 40,
                    "availability": {"kind": "markov", "mean_on_s": 3600, "mean_off_s": 120},
                },
            ],
            **_INLINE,
        },
        "100 devices (20 a round) instead of 1,000,000 (10,000 a round)",
    ),
    "fleet-10k": Case(
        "fleet-10k.yaml",
        {
            "rounds": 2,
            "evaluation.every": 1,
            "fleet.groups": [
                {"profile": "rpi-zero2w", "count": 60, "faults": {"crash_prob": 0.02}},
                {"profile": "rpi4", "count": 40},
            ],
            **_INLINE,
        },
        "100 devices instead of 10,000",
    ),
    "har-subjects": Case("har-subjects.yaml", {"rounds": 2, **_INLINE}),
    "heterogeneous-fleet": Case("heterogeneous-fleet.yaml", {"rounds": 2, **_INLINE}),
    "async-fleet": Case("async-fleet.yaml", {"rounds": 6, "evaluation.every": 3, **_INLINE}),
    "kws-registry": Case("kws-registry.yaml", {"rounds": 2, **_INLINE}),
    "kws-speakers": Case("kws-speakers.yaml", {"rounds": 2, **_INLINE}),
    "mnist-mixed-fedins": Case("fedins/mnist-mixed-fedins.yaml", _FEDINS, "tiny backbone"),
    "mnist-mixed-20-clients": Case("fedins/mnist-mixed-20-clients.yaml", _FEDINS, "tiny backbone"),
    "mnist-mixed-ssf": Case("fedins/mnist-mixed-ssf.yaml", _FEDINS, "tiny backbone"),
    "har-tinyreptile": Case("meta/har-tinyreptile.yaml", _META),
    "kanjivg-tinyreptile": Case(
        "meta/kanjivg-tinyreptile.yaml",
        {"fleet.groups": [{"profile": "nano33-ble-sense", "count": 20}], **_META},
        "20 tasks instead of 2,000",
    ),
    "omniglot-tinyreptile": Case(
        "meta/omniglot-tinyreptile.yaml",
        {"fleet.groups": [{"profile": "nano33-ble-sense", "count": 20}], **_META},
        "20 tasks instead of 2,000",
    ),
    "kws-tinyreptile": Case("meta/kws-tinyreptile.yaml", _META),
    "presence-tinyreptile": Case("meta/presence-tinyreptile.yaml", _META),
    "sine-tinyreptile": Case(
        "meta/sine-tinyreptile.yaml",
        {"fleet.groups": [{"profile": "nano33-ble-sense", "count": 20}], **_META},
        "20 tasks instead of 5,000",
    ),
    "sine-tinymetafed": Case(
        "meta/sine-tinymetafed.yaml",
        {"fleet.groups": [{"profile": "nano33-ble-sense", "count": 20}], **_META},
        "20 tasks instead of 5,000",
    ),
    "har-prototypes": Case(
        "reconnaissance/har-prototypes.yaml",
        {"algorithm.encoder.episodes": 4, **_INLINE},
        "4 pre-training episodes",
    ),
    "kws-prototypes": Case(
        "reconnaissance/kws-prototypes.yaml",
        {"algorithm.encoder.episodes": 4, **_INLINE},
        "4 pre-training episodes",
    ),
    "kanjivg-prototypes": Case(
        "reconnaissance/kanjivg-prototypes.yaml",
        {"rounds": 2, "algorithm.encoder.episodes": 4, **_INLINE},
        "2 missions, 4 pre-training episodes",
    ),
    "omniglot-prototypes": Case(
        "reconnaissance/omniglot-prototypes.yaml",
        {"algorithm.encoder.episodes": 4, **_INLINE},
        "4 pre-training episodes",
    ),
}


def shipped_scenarios() -> set[str]:
    """Every scenario file under scenarios/ (fleets/*.ttl are data), relative to it."""
    return {p.relative_to(SCENARIOS).as_posix() for p in SCENARIOS.rglob("*.yaml")}


@contextmanager
def fresh_pretraining() -> Iterator[None]:
    """A cache dir that sees the real one's datasets but not its pre-trained weights."""
    from fedsim.core.data import cache_dir

    real = cache_dir()
    old = os.environ.get("FEDSIM_CACHE")
    with tempfile.TemporaryDirectory(prefix="fedsim-golden-cache-") as tmp:
        hidden = {p for pattern in PRETRAINED for p in real.glob(pattern)}
        for entry in real.iterdir() if real.is_dir() else ():
            if entry not in hidden:
                (Path(tmp) / entry.name).symlink_to(entry)
        os.environ["FEDSIM_CACHE"] = tmp
        try:
            yield
        finally:
            if old is None:
                os.environ.pop("FEDSIM_CACHE", None)
            else:
                os.environ["FEDSIM_CACHE"] = old


def run_case(name: str, mode: Mode, work: Path, **extra: Any) -> dict[str, str]:
    """Run case ``name`` in ``mode`` under ``work``; the golden files' texts by file name.
    ``extra``: more dotted overrides (tests use them to show a changed run is caught)."""
    from fedsim.core.scenario_load import merged_data, with_changes
    from fedsim.runner import run

    case = CASES[name]
    changes = {**case.changes, "execution.mode": mode, **extra}
    data = with_changes(merged_data(SCENARIOS / case.scenario), changes)
    path = work / f"{name}-{mode}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    with fresh_pretraining():
        out = run(path, work / f"{name}-{mode}", overwrite=True, command="golden").out
    return outputs(out)


def outputs(out: Path) -> dict[str, str]:
    """A results folder's golden files: rounds.jsonl as written, devices.csv without wall-clock
    columns, and the model's tensor hashes."""
    return {
        "rounds.jsonl": (out / "rounds.jsonl").read_text(encoding="utf-8"),
        "devices.csv": _devices(out / "devices.csv"),
        "model.sha256.json": _model_hashes(out / "model.npz"),
    }


def _devices(path: Path) -> str:
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
        columns = list(rows[0]) if rows else []
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if k in MEASURED else v) for k, v in row.items()})
    return text.getvalue()


def _model_hashes(path: Path) -> str:
    with np.load(path, allow_pickle=False) as npz:
        table = {
            key: {
                "sha256": hashlib.sha256(np.ascontiguousarray(npz[key]).tobytes()).hexdigest(),
                "dtype": str(npz[key].dtype),
                "shape": list(npz[key].shape),
            }
            for key in sorted(npz.files)
        }
    return json.dumps(table, indent=1, sort_keys=True) + "\n"


def golden_dir(name: str, mode: Mode) -> Path:
    """Where case ``name``'s goldens for ``mode`` are: per mode only if the modes differed."""
    per_mode = GOLDEN / name / mode
    return per_mode if per_mode.is_dir() else GOLDEN / name


def differences(expected: Mapping[str, str], got: Mapping[str, str]) -> list[str]:
    """One readable line per file that differs (its first differing line, or tensor names)."""
    found: list[str] = []
    for file in FILES:
        want, have = expected.get(file), got.get(file)
        if want == have:
            continue
        if want is None or have is None:
            found.append(f"{file}: {'missing golden' if want is None else 'not written'}")
        elif file == "model.sha256.json":
            a, b = json.loads(want), json.loads(have)
            changed = sorted(k for k in a.keys() & b.keys() if a[k] != b[k])
            gone, new = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
            found.append(f"{file}: tensors changed {changed}, missing {gone}, unexpected {new}")
        else:
            found.append(f"{file}: {_first_difference(want, have)}")
    return found


def _first_difference(want: str, have: str) -> str:
    a, b = want.splitlines(), have.splitlines()
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"line {i + 1} differs\n  golden: {x}\n  now:    {y}"
    return f"{len(a)} lines in the golden, {len(b)} now"


def read_golden(name: str, mode: Mode) -> dict[str, str]:
    folder = golden_dir(name, mode)
    return {f: (folder / f).read_text(encoding="utf-8") for f in FILES if (folder / f).exists()}


def _write(folder: Path, files: Mapping[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for file, text in files.items():
        (folder / file).write_text(text, encoding="utf-8")


def record(names: list[str]) -> None:
    """Run each case in both modes and write its goldens (one set, or one per mode)."""
    with tempfile.TemporaryDirectory(prefix="fedsim-golden-") as tmp:
        for name in names:
            start = time.perf_counter()
            runs = {mode: run_case(name, mode, Path(tmp)) for mode in MODES}
            shutil.rmtree(GOLDEN / name, ignore_errors=True)
            same = runs["per-device"] == runs["cohort"]
            if same:
                _write(GOLDEN / name, runs["cohort"])
            else:
                for mode, files in runs.items():
                    _write(GOLDEN / name / mode, files)
            seconds = time.perf_counter() - start
            verdict = (
                "modes identical"
                if same
                else "MODES DIFFER: " + "; ".join(differences(runs["per-device"], runs["cohort"]))
            )
            print(f"{name}: {seconds:.1f} s (both modes), {verdict}", flush=True)


def check(names: list[str]) -> int:
    failed = 0
    with tempfile.TemporaryDirectory(prefix="fedsim-golden-") as tmp:
        for name in names:
            for mode in MODES:
                start = time.perf_counter()
                problems = differences(read_golden(name, mode), run_case(name, mode, Path(tmp)))
                failed += bool(problems)
                took = time.perf_counter() - start
                print(f"{name} [{mode}] {took:.1f} s: {'; '.join(problems) or 'ok'}", flush=True)
    return failed


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("record", "check"):
        print("usage: python -m tests.golden record|check [CASE ...]", file=sys.stderr)
        return 2
    names = argv[1:] or list(CASES)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        print(f"unknown cases {unknown}; known: {', '.join(CASES)}", file=sys.stderr)
        return 2
    if argv[0] == "record":
        record(names)
        return 0
    return 1 if check(names) else 0


if __name__ == "__main__":
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    raise SystemExit(main(sys.argv[1:]))
