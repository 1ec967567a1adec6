"""``report.html``: one page per run, or a comparison of runs, that a browser opens offline.

Everything is inside the file: the plots are PNGs embedded as ``data:`` URIs, the style is
inline, and there is no script but one that marks the page (``data-images="ok"`` on ``<body>``)
once every image has decoded, which the tests read back from headless Chromium. The page carries
what makes the run reproducible: the scenario's SHA-256, the seed and the versions.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedsim.core.errors import FedsimError
from fedsim.core.results import DEVICES, MANIFEST, SUMMARY, read_rounds

__all__ = [
    "FINAL",
    "REPORT",
    "RunView",
    "compare_report",
    "html_page",
    "img_tag",
    "plot_comparison",
    "run_report",
]

REPORT = "report.html"
PLOTS = (
    ("accuracy.png", "Accuracy and loss, vs round and vs simulated time"),
    ("fleet.png", "Participation, the fleet by profile, energy and bytes by device class"),
    ("adaptation.png", "Held-out devices after adaptation"),
    ("tiers.png", "Bytes and time per tier (devices, gateways, edge servers)"),
    ("asynchrony.png", "Asynchrony: staleness of the applied updates, updates per device"),
)
# final metrics compared across runs: (summary key, label, higher is better)
FINAL = (
    ("final_accuracy", "final accuracy", True),
    ("best_accuracy", "best accuracy", True),
    ("final_loss", "final loss", False),
    ("sim_time_s", "simulated time (s)", False),
    ("energy_j", "energy (J)", False),
    ("bytes_up", "bytes up", False),
    ("bytes_down", "bytes down", False),
    ("failures", "device failures", False),
    ("wall_s", "wall time (s)", False),
)
STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
.meta { color: #666; font-size: .9em; } img { max-width: 100%; border: 1px solid #ddd; }
table { border-collapse: collapse; margin: .5em 0; font-size: .92em; }
th, td { border-bottom: 1px solid #ddd; padding: .25em .7em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.better { color: #1a7f37; } .worse { color: #b42318; } code { font-size: .9em; }
"""
# the one script: mark the page once all images decoded (or say which did not)
MARK_IMAGES = """
window.addEventListener("load", () => {
  const bad = [...document.images].filter(i => !i.complete || i.naturalWidth === 0);
  document.body.dataset.images = bad.length ? "broken:" + bad.map(i => i.alt).join(",") : "ok";
});
"""


@dataclass(frozen=True)
class RunView:
    """What a report shows of one run folder."""

    out: Path
    manifest: dict[str, Any]
    summary: dict[str, Any]
    rounds: list[dict[str, Any]]

    @classmethod
    def read(cls, out: str | Path) -> RunView:
        out = Path(out)
        if not (out / MANIFEST).exists():
            raise FedsimError(
                str(out), "is not a run folder (no manifest.json)", "give a run's --out folder"
            )
        summary = out / SUMMARY
        return cls(
            out,
            json.loads((out / MANIFEST).read_text(encoding="utf-8")),
            json.loads(summary.read_text(encoding="utf-8")) if summary.exists() else {},
            read_rounds(out),
        )

    @property
    def name(self) -> str:
        return self.out.name


def img_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:,.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return html.escape(str(value))


def html_page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style>"
        f"<script>{MARK_IMAGES}</script></head>\n<body>\n{body}\n</body></html>\n"
    )


def _provenance(run: RunView) -> str:
    m = run.manifest
    versions = ", ".join(f"{k} {v}" for k, v in sorted(m.get("versions", {}).items()))
    return (
        f"<p class=meta>scenario <code>{html.escape(str(m.get('scenario_path', '')))}</code>, "
        f"SHA-256 <code>{html.escape(str(m.get('scenario_sha256', ''))[:16])}…</code>, "
        f"seed {_fmt(m.get('seed'))}, started {html.escape(str(m.get('started_at', '')))}<br>"
        f"{html.escape(versions)}</p>"
    )


def _profiles_table(out: Path) -> str:
    """The fleet by profile, from devices.csv: devices, device rounds by status, energy, bytes."""
    rows: dict[str, dict[str, Any]] = {}
    with (out / DEVICES).open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            mine = rows.setdefault(
                row["profile"],
                {"devices": set(), "rounds": 0, "ok": 0, "energy": 0.0, "bytes": 0},
            )
            mine["devices"].add(row["device_id"])
            mine["rounds"] += 1
            mine["ok"] += row["status"] == "ok"
            mine["energy"] += float(row["energy_mj"]) / 1000
            mine["bytes"] += int(row["bytes_down"]) + int(row["bytes_up"])
    head = "<tr><th>profile<th>devices<th>device rounds<th>trained<th>energy (J)<th>bytes</tr>"
    body = "".join(
        f"<tr><td>{html.escape(p)}<td>{len(r['devices'])}<td>{r['rounds']}<td>{r['ok']}"
        f"<td>{_fmt(r['energy'])}<td>{_fmt(r['bytes'])}</tr>"
        for p, r in sorted(rows.items())
    )
    return f"<table>{head}{body}</table>"


def _topology_tables(summary: dict[str, Any]) -> str:
    """Runs through gateways: bytes and time per tier, against a star; the gateways."""
    t = summary.get("topology")
    if not t:
        return ""
    head = (
        "<tr><th>tier<th>bytes down<th>bytes up<th>as a star (bytes)<th>vs a star"
        "<th>on the slowest branch (s)</tr>"
    )
    rows = ""
    for name, v in t["tiers"].items():
        sent = v["bytes_down"] + v["bytes_up"]
        ratio = f"{sent / v['star_bytes']:.1%}" if v["star_bytes"] else "–"
        rows += (
            f"<tr><td>{html.escape(name)}<td>{_fmt(v['bytes_down'])}<td>{_fmt(v['bytes_up'])}"
            f"<td>{_fmt(v['star_bytes'])}<td>{ratio}<td>{_fmt(v['s'])}</tr>"
        )
    gateways = "".join(
        f"<tr><td>{html.escape(g['name'])}<td>{html.escape(g['profile'])}<td>{g['devices']}"
        f"<td>{html.escape(g['link'])}<td>{html.escape(g['tier'])}"
        f"<td>{html.escape(g['parent'] or 'the server')}</tr>"
        for g in t["gateways"]
    )
    return (
        f"<h2>Tiers</h2><p>{t['local_rounds']} local round(s) per global round. Backhaul "
        f"(every tier above the devices): {_fmt(t['backhaul_bytes'])} bytes, "
        f"{_fmt(t['backhaul_vs_star'])} of what the same device rounds would put on it in a star "
        f"through forwarding gateways ({_fmt(t['backhaul_bytes_star'])}). Gateways down "
        f"{t['gateways_down']}, late {t['gateways_late']}, partials lost "
        f"{t['gateways_lost']}; devices cut off with their gateway: {t['gateway_cut']} (summed "
        f"over rounds); gateways' energy "
        f"{_fmt(summary.get('gateway_energy_j'))} J.</p>"
        f"<table>{head}{rows}</table>"
        "<table><tr><th>gateway<th>profile<th>devices<th>uplink<th>tier<th>reports to</tr>"
        f"{gateways}</table>"
    )


def run_report(out: str | Path) -> Path:
    """Write ``<out>/report.html`` for one run (from its files; plots must exist for images)."""
    run = RunView.read(out)
    s = run.summary
    title = f"{run.manifest.get('scenario', run.name)}: {s.get('algorithm', '')}"
    status = s.get("status", "unfinished")
    if status != "completed":
        done = s.get("rounds_completed", len(run.rounds))
        status = f"{status} after {done} rounds: {s.get('error', '')}"
    summary_rows = "".join(
        f"<tr><td>{label}<td>{_fmt(s.get(key))}</tr>" for key, label, _ in FINAL if key in s
    )
    plots = "".join(
        f"<h2>{html.escape(caption)}</h2>{img_tag(run.out / 'plots' / name, caption)}"
        for name, caption in PLOTS
        if (run.out / "plots" / name).exists()
    )
    rounds_head = "<tr><th>round<th>participants<th>failures<th>accuracy<th>loss<th>sim s</tr>"
    rounds = "".join(
        f"<tr><td>{r['round']}<td>{r['participants']}<td>{r['failures']}"
        f"<td>{_fmt(r['accuracy'])}<td>{_fmt(r['loss'])}<td>{_fmt(r['sim_time_s'])}</tr>"
        for r in run.rounds
    )
    body = (
        f"<h1>{html.escape(title)}</h1>{_provenance(run)}"
        f"<p>Status: {html.escape(status)}. {_fmt(s.get('devices'))} devices, "
        f"{len(run.rounds)} rounds.</p>"
        f"<h2>Final metrics</h2><table>{summary_rows}</table>{plots}"
        f"{_topology_tables(s)}"
        f"<h2>The fleet by profile</h2>{_profiles_table(run.out)}"
        f"<details><summary>Every round</summary><table>{rounds_head}{rounds}</table></details>"
    )
    path = run.out / REPORT
    path.write_text(html_page(title, body), encoding="utf-8")
    return path


def plot_comparison(runs: Sequence[RunView], path: Path) -> Path:
    """Accuracy and loss of every run overlaid, vs round and vs simulated time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7), constrained_layout=True)
    for run in runs:
        rounds = [r for r in run.rounds if r["loss"] is not None]
        for row, key in enumerate(("round", "sim_time_s")):
            x = [r[key] for r in rounds]
            axes[row][0].plot(x, [r["accuracy"] for r in rounds], marker="o", ms=3, label=run.name)
            axes[row][1].plot(x, [r["loss"] for r in rounds], marker="o", ms=3, label=run.name)
    for row, label in enumerate(("round", "simulated time (s)")):
        axes[row][0].set(xlabel=label, ylabel="accuracy", title=f"accuracy vs {label}")
        axes[row][1].set(xlabel=label, ylabel="loss", title=f"loss vs {label}")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def compare_report(outs: Sequence[str | Path], path: str | Path) -> Path:
    """Runs side by side: final metrics with the difference from the first run, curves overlaid."""
    runs = [RunView.read(out) for out in outs]
    path = Path(path)
    head = "<tr><th>metric" + "".join(f"<th>{html.escape(r.name)}" for r in runs) + "</tr>"
    rows = []
    for key, label, higher in FINAL:
        first = runs[0].summary.get(key)
        cells = [f"<td>{_fmt(first)}"]
        for run in runs[1:]:
            value = run.summary.get(key)
            cells.append(f"<td>{_fmt(value)}{_difference(first, value, higher)}")
        rows.append(f"<tr><td>{label}{''.join(cells)}</tr>")
    image = path.parent / (path.stem + "-curves.png")
    plot_comparison(runs, image)
    provenance = "".join(
        f"<h3>{html.escape(r.name)}</h3>{_provenance(r)}" for r in runs
    )  # what each run was
    body = (
        f"<h1>Comparison of {len(runs)} runs</h1>"
        f"<h2>Final metrics (difference from {html.escape(runs[0].name)})</h2>"
        f"<table>{head}{''.join(rows)}</table>"
        f"<h2>Curves</h2>{img_tag(image, 'curves of every run')}"
        f"<h2>Runs</h2>{provenance}"
    )
    image.unlink()  # it lives inside the page
    path.write_text(html_page("fedsim: comparison", body), encoding="utf-8")
    return path


def _difference(first: Any, value: Any, higher: bool) -> str:
    if not isinstance(first, int | float) or not isinstance(value, int | float):
        return ""
    delta = value - first
    if delta == 0 or math.isnan(delta):
        return ""
    better = (delta > 0) == higher
    return f" <span class={'better' if better else 'worse'}>({delta:+,.4g})</span>"
