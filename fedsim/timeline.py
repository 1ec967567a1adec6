"""``plots/timeline.png``: what each device did over simulated time, one row per device: busy
(downloading, training, uploading), cut as a straggler, dropped out, failed, skipped for memory,
offline, or online and idle. From ``rounds.jsonl`` (when each round ran), ``devices.csv`` (who
was asked, how long each was busy, how it ended) and the fleet's availability model (who was
offline), so it needs no more than the run's files and its scenario."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedsim.core.errors import FedsimError
from fedsim.core.results import DEVICES, MANIFEST, read_rounds

if TYPE_CHECKING:
    from devices.fleet import Fleet

__all__ = ["TIMELINE_ROWS", "Timeline", "plot_timeline", "timeline"]

TIMELINE_ROWS = 100  # more rows than this are unreadable: the devices are sampled evenly
# devices.csv statuses as the timeline draws them (ok: busy), then what no row says
COLOURS = {
    "busy": "tab:green",
    "straggler": "tab:orange",
    "dropout": "tab:purple",
    "failed": "tab:red",
    "no-reply": "tab:pink",
    "memory-skip": "tab:grey",
    "gateway-down": "tab:brown",
    "gateway-lost": "tab:olive",
    "offline": "#333333",
}
IDLE = "#e3f0e3"  # online and not asked (or waiting for the round's end)
MIN_WIDTH = 1e-3  # a segment of 0 s (a skip) is still drawn, as a sliver


@dataclass
class Timeline:
    """Per shown device: ``(start_s, duration_s)`` spans per state; the run's simulated end."""

    devices: list[int]
    total: int  # devices in the fleet
    end_s: float
    spans: dict[int, dict[str, list[tuple[float, float]]]] = field(default_factory=dict)

    def add(self, device: int, state: str, start: float, width: float) -> None:
        mine = self.spans.setdefault(device, {})
        mine.setdefault(state, []).append((start, max(width, MIN_WIDTH)))


def _shown(total: int, limit: int) -> list[int]:
    """Up to ``limit`` device ids, evenly spread over ``0..total-1`` (first and last included)."""
    if total <= limit:
        return list(range(total))
    return sorted({round(float(i)) for i in np.linspace(0, total - 1, limit)})


def _fleet(out: Path) -> Fleet | None:
    """The run's fleet, for its availability (None: its scenario is gone or no longer valid)."""
    from devices.fleet import load_fleet

    try:
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        return load_fleet(manifest["scenario_path"])[1]
    except (OSError, KeyError, ValueError, FedsimError):
        return None


def timeline(out: str | Path, fleet: Fleet | None = None, limit: int = TIMELINE_ROWS) -> Timeline:
    """Each shown device's states over the run. A synchronous round's work starts with the
    round; an asynchronous device's row comes at the update it arrived at, its work before it.
    ``fleet``: for the offline spans (default: the run's, from its manifest)."""
    out = Path(out)
    records = read_rounds(out)
    windows = {r["round"]: (r["sim_time_s"] - r["round_s"], r["sim_time_s"]) for r in records}
    asynchronous = any(r.get("staleness") is not None for r in records)
    with (out / DEVICES).open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    fleet = fleet if fleet is not None else _fleet(out)
    total = (
        len(fleet)
        if fleet is not None
        else 1 + max((int(r["device_id"]) for r in rows), default=-1)
    )
    end = max((w[1] for w in windows.values()), default=0.0)
    line = Timeline(_shown(total, limit), total, end)
    shown = set(line.devices)
    for row in rows:
        device, round_ = int(row["device_id"]), int(row["round"])
        if device not in shown or round_ not in windows:
            continue
        busy = float(row["busy_s"])
        start = windows[round_][1] - busy if asynchronous else windows[round_][0]
        state = "busy" if row["status"] == "ok" else row["status"]
        line.add(device, state, start, busy)
    if fleet is not None and fleet.availability:
        _offline(line, fleet, sorted(windows.values()))
    return line


def _offline(line: Timeline, fleet: Fleet, windows: list[tuple[float, float]]) -> None:
    """Offline spans from the availability model, per window: from its start (or from when the
    device went off in it) until it came back or the window ended."""
    for group, availability in enumerate(fleet.availability):
        ids = np.array([d for d in line.devices if fleet[d].group == group], np.int64)
        if not len(ids):
            continue
        for start, end in windows:
            online, until = availability.online(ids, start)
            for d in ids[~online]:
                back = float(availability.next_online(np.array([d]), start)[0])
                line.add(int(d), "offline", start, min(back, end) - start)
            for d, off in zip(ids[online], until[online], strict=True):
                if off < end:
                    back = float(availability.next_online(np.array([d]), float(off))[0])
                    line.add(int(d), "offline", float(off), min(back, end) - float(off))


def plot_timeline(out: str | Path, title: str, fleet: Fleet | None = None) -> Path:
    """``plots/timeline.png``: one row per device (at most ``TIMELINE_ROWS``, sampled evenly)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    line = timeline(out, fleet)
    height = min(2.0 + 0.12 * len(line.devices), 14.0)
    fig, ax = plt.subplots(figsize=(10, height), constrained_layout=True)
    used: set[str] = set()
    for row, device in enumerate(line.devices):
        ax.broken_barh([(0.0, line.end_s)], (row - 0.45, 0.9), facecolors=IDLE)
        for state in COLOURS:  # offline last: a device that went off is shown off
            spans = line.spans.get(device, {}).get(state, [])
            if spans:
                ax.broken_barh(spans, (row - 0.45, 0.9), facecolors=COLOURS[state])
                used.add(state)
    ax.set(xlabel="simulated time (s)", ylabel="device", xlim=(0, max(line.end_s, 1e-9)))
    ax.set_ylim(-0.6, len(line.devices) - 0.4)
    ax.invert_yaxis()
    ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=12))
    ax.yaxis.set_major_formatter(
        lambda y, _: str(line.devices[int(y)]) if 0 <= int(y) < len(line.devices) else ""
    )
    handles = [Patch(color=IDLE, label="online, idle")]
    handles += [Patch(color=COLOURS[s], label=s) for s in COLOURS if s in used]
    fig.legend(handles=handles, fontsize=7, loc="outside lower center", ncol=5)
    sampled = len(line.devices) < line.total
    what = f"{len(line.devices)} of {line.total} devices, sampled evenly" if sampled else ""
    fig.suptitle(f"{title}: device timeline" + (f" ({what})" if what else ""), fontsize=10)
    path = Path(out) / "plots" / "timeline.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
