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
    "LOST",
    "REPORT",
    "RunView",
    "compare_report",
    "differing_settings",
    "html_page",
    "img_tag",
    "labels",
    "plot_comparison",
    "run_report",
]

REPORT = "report.html"
PLOTS = (
    ("accuracy.png", "Accuracy and loss, vs round and vs simulated time"),
    ("fleet.png", "Participation, the fleet by profile, energy and bytes by device class"),
    ("timeline.png", "Each device over simulated time: busy, cut, dropped out, offline"),
    ("adaptation.png", "Held-out devices after adaptation"),
    ("tiers.png", "Bytes and time per tier (devices, gateways, edge servers)"),
    ("asynchrony.png", "Asynchrony: staleness of the applied updates, updates per device"),
)
# final metrics compared across runs: (summary key, label, higher is better; None: no colour,
# wall time is the machine's noise, not the simulated system's)
FINAL: tuple[tuple[str, str, bool | None], ...] = (
    ("final_accuracy", "final accuracy", True),
    ("best_accuracy", "best accuracy", True),
    ("final_loss", "final loss", False),
    ("sim_time_s", "simulated time (s)", False),
    ("energy_j", "energy (J)", False),
    ("bytes_up", "bytes up", False),
    ("bytes_down", "bytes down", False),
    ("failures", "device failures", False),
    ("wall_s", "wall time (s)", None),
)
# device rounds a run lost, summed over its rounds (rounds.jsonl): (key, label)
LOST = (
    ("stragglers", "stragglers (cut by the deadline)"),
    ("dropouts", "dropouts (went offline mid-round)"),
    ("offline", "offline when a round started"),
    ("memory_skips", "skipped for memory"),
)
ABSENT = "(not set)"  # a setting one run's scenario has and another's lacks
SCENARIO_COPY = "scenario.yaml"  # written by the run (server.outputs.write_scenario_copy)
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

    @property
    def label(self) -> str:
        """What the run was: scenario, algorithm, seed (its folder may be any name)."""
        scenario = self.manifest.get("scenario", self.name)
        algorithm = self.summary.get("algorithm") or self.settings().get("algorithm.kind", "")
        return f"{scenario} · {algorithm} · seed {self.manifest.get('seed', '?')}"

    def lost(self) -> dict[str, int]:
        """Device rounds lost to each cause (``LOST``), over every round so far."""
        return {key: sum(int(r.get(key) or 0) for r in self.rounds) for key, _ in LOST}

    def scenario_text(self) -> str | None:
        """The run's copy of its scenario (None: a run from before runs kept one)."""
        path = self.out / SCENARIO_COPY
        return path.read_text(encoding="utf-8") if path.exists() else None

    def settings(self) -> dict[str, Any]:
        """The scenario as it ran, as dotted keys (``fleet.groups[0].count``): from the run's
        copy, else from the scenario file its manifest names, else nothing."""
        import yaml

        text = self.scenario_text()
        if text is None:
            from fedsim.core.scenario_load import load_scenario

            try:
                data = load_scenario(self.manifest["scenario_path"]).model_dump(mode="json")
            except (KeyError, OSError, FedsimError):
                return {}
        else:
            data = yaml.safe_load(text)
        return _flatten(data) if isinstance(data, dict) else {}


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat |= _flatten(item, f"{prefix}.{key}" if prefix else str(key))
        return flat
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        flat = {}
        for i, item in enumerate(value):
            flat |= _flatten(item, f"{prefix}[{i}]")
        return flat
    return {prefix: value}


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
    lost = run.lost()
    summary_rows += "".join(
        f"<tr><td>{label} (device rounds)<td>{_fmt(lost[key])}</tr>" for key, label in LOST
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
        f"{_scenario_section(run)}"
    )
    path = run.out / REPORT
    path.write_text(html_page(title, body), encoding="utf-8")
    return path


def _scenario_section(run: RunView) -> str:
    """The scenario as it ran (``scenario.yaml``), folded: the page says what was run."""
    text = run.scenario_text()
    if text is None:
        return ""
    return (
        f"<details><summary>The scenario as it ran ({SCENARIO_COPY} in the run folder: "
        f"<code>fedsim run {html.escape(str(run.out / SCENARIO_COPY))}</code> runs it again)"
        f"</summary><pre>{html.escape(text)}</pre></details>"
    )


def labels(runs: Sequence[RunView]) -> list[str]:
    """Each run as scenario · algorithm · seed; its folder too where that names two runs."""
    plain = [r.label for r in runs]
    return [
        f"{label} ({run.name})" if plain.count(label) > 1 else label
        for run, label in zip(runs, plain, strict=True)
    ]


def plot_comparison(runs: Sequence[RunView], path: Path, names: Sequence[str] = ()) -> Path:
    """Accuracy and loss of every run overlaid, vs round and vs simulated time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    names = list(names) or labels(runs)
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), constrained_layout=True)
    for run, name in zip(runs, names, strict=True):
        rounds = [r for r in run.rounds if r["loss"] is not None]
        for row, key in enumerate(("round", "sim_time_s")):
            x = [r[key] for r in rounds]
            axes[row][0].plot(x, [r["accuracy"] for r in rounds], marker="o", ms=3, label=name)
            axes[row][1].plot(x, [r["loss"] for r in rounds], marker="o", ms=3, label=name)
    for row, label in enumerate(("round", "simulated time (s)")):
        axes[row][0].set(xlabel=label, ylabel="accuracy", title=f"accuracy vs {label}")
        axes[row][1].set(xlabel=label, ylabel="loss", title=f"loss vs {label}")
    for ax in axes[0]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def differing_settings(runs: Sequence[RunView]) -> dict[str, list[Any]]:
    """The scenario settings (dotted keys) whose values are not the same in every run."""
    settings = [r.settings() for r in runs]
    keys = dict.fromkeys(k for s in settings for k in s)
    return {
        key: [s.get(key, ABSENT) for s in settings]
        for key in keys
        if len({json.dumps(s.get(key, ABSENT), sort_keys=True) for s in settings}) > 1
    }


def _setting(value: Any) -> str:
    if value == ABSENT:
        return "<td>–"
    plain = value if isinstance(value, int | float | str) else json.dumps(value)
    return f"<td>{_fmt(plain)}"


def _settings_table(runs: Sequence[RunView], names: Sequence[str]) -> str:
    differ = differing_settings(runs)
    if not differ:
        return "<p>The runs' scenarios set nothing differently (or none kept a copy).</p>"
    head = "<tr><th>setting" + "".join(f"<th>{html.escape(n)}" for n in names) + "</tr>"
    rows = "".join(
        f"<tr><td><code>{html.escape(key)}</code>" + "".join(_setting(v) for v in values) + "</tr>"
        for key, values in differ.items()
    )
    return f"<table>{head}{rows}</table>"


def compare_report(outs: Sequence[str | Path], path: str | Path) -> Path:
    """Runs side by side: the settings that differ, final metrics with the difference from the
    first run, curves overlaid."""
    runs = [RunView.read(out) for out in outs]
    names = labels(runs)
    path = Path(path)
    head = "<tr><th>metric" + "".join(f"<th>{html.escape(n)}" for n in names) + "</tr>"
    rows = []
    for key, label, higher in FINAL:
        rows.append(_compared(label, [r.summary.get(key) for r in runs], higher))
    for key, label in LOST:
        rows.append(_compared(f"{label} (device rounds)", [r.lost()[key] for r in runs], False))
    image = path.parent / (path.stem + "-curves.png")
    plot_comparison(runs, image, names)
    provenance = "".join(
        f"<h3>{html.escape(n)}</h3><p class=meta>folder <code>{html.escape(str(r.out))}</code></p>"
        f"{_provenance(r)}"
        for r, n in zip(runs, names, strict=True)
    )  # what each run was
    body = (
        f"<h1>Comparison of {len(runs)} runs</h1>"
        f"<h2>Settings that differ</h2>{_settings_table(runs, names)}"
        f"<h2>Final metrics (difference from {html.escape(names[0])})</h2>"
        f"<p class=meta>Wall time depends on the machine and its load: it is not coloured.</p>"
        f"<table>{head}{''.join(rows)}</table>"
        f"<h2>Curves</h2>{img_tag(image, 'curves of every run')}"
        f"<h2>Runs</h2>{provenance}"
    )
    image.unlink()  # it lives inside the page
    path.write_text(html_page("fedsim: comparison", body), encoding="utf-8")
    return path


def _compared(label: str, values: list[Any], higher: bool | None) -> str:
    first = values[0]
    cells = [f"<td>{_fmt(first)}"] + [
        f"<td>{_fmt(value)}{_difference(first, value, higher)}" for value in values[1:]
    ]
    return f"<tr><td>{label}{''.join(cells)}</tr>"


def _difference(first: Any, value: Any, higher: bool | None) -> str:
    if not isinstance(first, int | float) or not isinstance(value, int | float):
        return ""
    delta = value - first
    if delta == 0 or math.isnan(delta):
        return ""
    if higher is None:  # noise: the difference, in no colour
        return f" <span>({delta:+,.4g})</span>"
    better = (delta > 0) == higher
    return f" <span class={'better' if better else 'worse'}>({delta:+,.4g})</span>"
