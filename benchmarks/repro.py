"""What every reproduction shares (issue 23): resumable runs, the tuning protocol, the table.

A reproduction compares methods fairly (each method's learning rate tuned on the same grid, on a
tuning seed none of the reported seeds use; then ≥ 3 fresh seeds, mean ± 95% CI by Student's t) and
prints one table: the claim, the setting, each method's result and budget, and a verdict.

Runs are slow, so every finished run is kept as one JSON line in ``<out>/runs.jsonl`` keyed by
what determines it (method, learning rate, seed, and anything else the caller puts in the key): a
reproduction that is stopped and run again skips what it already has ("split into resumable
parts"). ``--fresh`` starts over.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from fedsim.core.stats import mean_ci95

__all__ = [
    "TUNE_SEED",
    "Measured",
    "Reproduction",
    "Row",
    "Store",
    "digest",
    "edge_note",
    "fmt_ci",
    "row_of",
    "tune",
]

TUNE_SEED = 1000  # the seed learning rates are tuned on; reported seeds are 0, 1, 2, ...


@dataclass(frozen=True)
class Measured:
    """One run's outcome: the score and what it cost (``budget``: name → number)."""

    score: float
    budget: dict[str, float] = field(default_factory=dict)
    extra: dict[str, float] = field(default_factory=dict)  # other scores (per domain, base, ...)


class Store:
    """Finished runs, one JSON line each, so that a reproduction resumes where it stopped."""

    def __init__(self, path: Path, fresh: bool = False) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if fresh and path.exists():
            path.unlink()
        self._runs: dict[str, Measured] = {}
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    item = json.loads(line)
                    self._runs[item["key"]] = Measured(
                        item["score"], item.get("budget", {}), item.get("extra", {})
                    )

    @staticmethod
    def key(parts: Mapping[str, Any]) -> str:
        return json.dumps(dict(parts), sort_keys=True, default=str)

    def has(self, parts: Mapping[str, Any]) -> bool:
        """Whether the run for ``parts`` is stored (a parallel runner runs only the others)."""
        return self.key(parts) in self._runs

    def get(self, parts: Mapping[str, Any], run: Callable[[], Measured]) -> Measured:
        """The stored run for ``parts``, or ``run()``'s, stored before it is returned."""
        key = self.key(parts)
        if key not in self._runs:
            measured = run()
            self._runs[key] = measured
            item = {
                "key": key,
                "score": measured.score,
                "budget": measured.budget,
                "extra": measured.extra,
            }
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(item) + "\n")
        return self._runs[key]


def tune(
    grid: Sequence[float],
    score: Callable[[float], float],
    higher_is_better: bool = True,
) -> float:
    """The learning rate of ``grid`` with the best ``score(lr)`` (run on the tuning seed).

    A non-finite score (a diverged run) never wins; if every run diverges, the smallest rate is
    returned, so the reported seeds show the divergence rather than hide the method.
    """
    best, best_score = min(grid), -math.inf
    for lr in grid:
        s = score(lr)
        if not math.isfinite(s):
            continue
        s = s if higher_is_better else -s
        if s > best_score:
            best, best_score = lr, s
    return best


def digest(spec: Mapping[str, Any]) -> str:
    """A short hash of everything that determines a run (e.g. its generated scenario), for store
    keys: a run is never reused for a setting that differs in any key, named or not."""
    import hashlib

    text = json.dumps(dict(spec), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def edge_note(grid: Sequence[float], lr: float) -> str:
    """A warning for a rate tuned to the grid's edge: the best may lie beyond it, so a ranking
    that depends on that method is provisional (said in the row, not hidden)."""
    if len(grid) > 1 and lr in (min(grid), max(grid)):
        side = "top" if lr == max(grid) else "bottom"
        return f"lr at the grid's {side} edge"
    return ""


@dataclass(frozen=True)
class Row:
    """A method's result over the reported seeds."""

    method: str
    lr: float | None
    seeds: int
    mean: float
    ci95: float
    budget: dict[str, float]  # mean over seeds
    extra: dict[str, tuple[float, float]] = field(default_factory=dict)  # name → (mean, ci95)
    note: str = ""


def row_of(method: str, lr: float | None, runs: Sequence[Measured], note: str = "") -> Row:
    """Mean ± 95% CI over ``runs`` (one per seed), budgets averaged."""
    mean, ci = mean_ci95([r.score for r in runs])
    names = sorted({k for r in runs for k in r.budget})
    budget = {k: sum(r.budget.get(k, 0.0) for r in runs) / len(runs) for k in names}
    extras = sorted({k for r in runs for k in r.extra})
    extra = {k: mean_ci95([r.extra[k] for r in runs if k in r.extra]) for k in extras}
    return Row(method, lr, len(runs), mean, ci, budget, extra, note)


def fmt_ci(mean: float, ci: float, digits: int = 3) -> str:
    if not math.isfinite(mean):
        return str(mean)
    return f"{mean:.{digits}f} ± {ci:.{digits}f}"


@dataclass
class Reproduction:
    """One paper's reproduction: its claim, the setting, the rows, and the verdict."""

    name: str  # file stem under ``out``
    paper: str
    claim: str
    setting: str
    metric: str
    command: str
    rows: list[Row] = field(default_factory=list)
    verdict: str = ""  # "reproduced" | "not reproduced" | "partially reproduced", with the reason
    notes: list[str] = field(default_factory=list)
    budget_names: Sequence[str] = ()  # columns, in order; default: every budget key seen

    def markdown(self) -> str:
        budgets = list(self.budget_names) or sorted({k for r in self.rows for k in r.budget})
        extras = sorted({k for r in self.rows for k in r.extra})
        head = ["method", "lr", "seeds", f"{self.metric} (95% CI)", *extras, *budgets, "note"]
        lines = [
            f"### {self.paper}",
            "",
            f"- **Claim:** {self.claim}",
            f"- **Setting:** {self.setting}",
            f"- **Command:** `{self.command}` ({date.today().isoformat()})",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
        ]
        for r in self.rows:
            cells = [
                r.method,
                "—" if r.lr is None else f"{r.lr:g}",
                str(r.seeds),
                fmt_ci(r.mean, r.ci95),
                *(fmt_ci(*r.extra[k]) if k in r.extra else "—" for k in extras),
                *(_number(r.budget[k]) if k in r.budget else "—" for k in budgets),
                r.note,
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", f"**Verdict: {self.verdict}**" if self.verdict else ""]
        lines += [f"- {n}" for n in self.notes]
        return "\n".join(lines).rstrip() + "\n"

    def write(self, out: Path) -> Path:
        """``<out>/<name>.md``, ``.csv`` and ``.json``; prints the table too."""
        out.mkdir(parents=True, exist_ok=True)
        text = self.markdown()
        (out / f"{self.name}.md").write_text(text, encoding="utf-8")
        with (out / f"{self.name}.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["method", "lr", "seeds", "mean", "ci95", "budget", "extra", "note"])
            for r in self.rows:
                writer.writerow(
                    [
                        r.method,
                        r.lr,
                        r.seeds,
                        r.mean,
                        r.ci95,
                        json.dumps(r.budget),
                        json.dumps(r.extra),
                        r.note,
                    ]
                )
        (out / f"{self.name}.json").write_text(
            json.dumps(
                {
                    "paper": self.paper,
                    "claim": self.claim,
                    "setting": self.setting,
                    "command": self.command,
                    "verdict": self.verdict,
                    "notes": self.notes,
                    "rows": [r.__dict__ for r in self.rows],
                },
                indent=1,
                default=list,
            ),
            encoding="utf-8",
        )
        print(text, flush=True)
        return out / f"{self.name}.md"


def _number(x: float) -> str:
    if not math.isfinite(x):
        return str(x)
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def seeds_of(count: int) -> Iterable[int]:
    return range(count)


def one_thread() -> None:
    """Benchmarks run their methods one after another; torch's thread pool only adds noise."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
