"""Plots of a run's metrics, rendered from ``rounds.jsonl`` (headless: the Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedsim.core.results import DEVICES, read_rounds

__all__ = [
    "clip_band",
    "plot_accuracy",
    "plot_adaptation",
    "plot_asynchrony",
    "plot_fleet",
    "plot_samples",
    "plot_tiers",
]

# devices.csv statuses, in the order participation bars stack them
STATUS_COLOURS = {
    "ok": "tab:green",
    "failed": "tab:red",
    "no-reply": "tab:pink",
    "straggler": "tab:orange",
    "dropout": "tab:purple",
    "memory-skip": "tab:grey",
    "gateway-down": "tab:brown",
    "gateway-lost": "tab:olive",
}


# the values a metric can take; any other metric (a loss, energy, time, bytes) is ≥ 0
VALID_RANGE = {"accuracy": (0.0, 1.0)}


def clip_band(
    low: NDArray[Any], high: NDArray[Any], metric: str
) -> tuple[NDArray[Any], NDArray[Any]]:
    """A confidence band cut to the values ``metric`` can take: mean ± t·s/√n of a few seeds
    reaches past an accuracy of 1 or below a loss of 0, which no run can score."""
    lo, hi = VALID_RANGE.get(metric, (0.0, np.inf))
    return np.clip(low, lo, hi), np.clip(high, lo, hi)


def _integer_rounds(*axes: Any) -> None:
    """Round (and device, update) axes tick at whole numbers only: there is no round 2.5."""
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _save(fig: Any, path: Path, title: str, dpi: int = 110) -> Path:
    """Title ``fig``, write it to ``path`` (its folder made) and close it."""
    import matplotlib.pyplot as plt

    fig.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_accuracy(out: str | Path, title: str) -> Path:
    """``plots/accuracy.png``: global test accuracy and loss vs round and vs simulated time;
    rounds with device failures marked; for class-incremental runs also the accuracy on the
    first classes (what the server retains)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_rounds(out)
    rounds = [r for r in records if r["loss"] is not None]
    failed = [r for r in records if r["failures"]]
    fig, axes = plt.subplots(2, 2, figsize=(9, 6.4), constrained_layout=True)
    regression = all(r["accuracy"] is None for r in rounds)
    ylabel = "mean squared error" if regression else "cross-entropy"
    incremental = any(r.get("base_accuracy") is not None for r in rounds)
    for row, (key, label) in enumerate((("round", "round"), ("sim_time_s", "simulated time (s)"))):
        ax_acc, ax_loss = axes[row]
        x = [r[key] for r in rounds]
        if not regression:
            ax_acc.plot(x, [r["accuracy"] for r in rounds], marker="o", ms=3, label="global test")
            if incremental:
                base = [r.get("base_accuracy") for r in rounds]
                ax_acc.plot(x, base, marker="s", ms=3, label="first classes (retained)")
        else:
            ax_acc.text(
                0.5, 0.5, "regression: no accuracy", ha="center", transform=ax_acc.transAxes
            )
        ax_acc.set(xlabel=label, ylabel="accuracy", ylim=(0, 1), title=f"accuracy vs {label}")
        ax_loss.plot(
            x,
            [r["loss"] for r in rounds],
            marker="o",
            ms=3,
            color="tab:red",
            label="test (global model)",
        )
        trained = [r for r in records if r.get("train_loss") is not None]
        if trained:  # the devices' own loss, example-weighted over those that delivered
            train_x, train_y = [r[key] for r in trained], [r["train_loss"] for r in trained]
            ax_loss.plot(train_x, train_y, marker=".", ms=3, color="tab:blue", label="training")
            ax_loss.legend(fontsize=8)
        ax_loss.set(xlabel=label, ylabel=ylabel, title=f"loss vs {label}")
        for r in failed:
            ax_acc.axvline(r[key], color="grey", alpha=0.3, lw=1)
        if failed:
            ax_acc.plot([], [], color="grey", alpha=0.5, label="round with device failures")
        if not regression:
            ax_acc.legend(loc="lower right", fontsize=8)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    _integer_rounds(*axes[0])
    return _save(fig, Path(out) / "plots" / "accuracy.png", title)


def plot_adaptation(out: str | Path, title: str) -> Path:
    """``plots/adaptation.png``: held-out devices' score after adapting θ vs round (95% CI band),
    and the final round's adaptation curve (score vs adaptation steps)."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    final = json.loads((Path(out) / "adaptation.json").read_text(encoding="utf-8"))
    metric = "MSE" if final["metric"] == "mse" else "accuracy"
    rounds = [r for r in read_rounds(out) if r.get("adapted") is not None]
    fig, (ax_round, ax_steps) = plt.subplots(1, 2, figsize=(9, 3.4), constrained_layout=True)
    x = np.array([r["round"] for r in rounds])
    mean = np.array([r["adapted"] for r in rounds])
    ci = np.array([r["adapted_ci95"] for r in rounds])
    ax_round.plot(x, mean, marker="o", ms=3, label="after adaptation")
    low, high = clip_band(mean - ci, mean + ci, "mse" if final["metric"] == "mse" else "accuracy")
    ax_round.fill_between(x, low, high, alpha=0.25, label="95% CI")
    ax_round.set(xlabel="round", ylabel=metric, title="held-out devices, adapted")
    ax_round.legend(fontsize=8)
    steps = np.arange(len(final["curve"]))
    ax_steps.plot(steps, final["curve"], marker="o", ms=3, color="tab:green")
    ax_steps.set(xlabel="adaptation steps", ylabel=metric, title="final θ: adaptation curve")
    if final["metric"] == "mse" and np.all(np.isfinite(final["curve"])) and min(final["curve"]) > 0:
        for ax in (ax_round, ax_steps):
            ax.set_yscale("log")
    for ax in (ax_round, ax_steps):
        ax.grid(alpha=0.3)
    _integer_rounds(ax_round, ax_steps)
    return _save(fig, Path(out) / "plots" / "adaptation.png", title, 120)


def _per_profile(out: Path) -> tuple[dict[str, dict[str, float]], dict[int, dict[str, int]]]:
    """From devices.csv: totals per profile, and status counts per round."""
    import csv

    totals: dict[str, dict[str, float]] = {}
    statuses: dict[int, dict[str, int]] = {}
    seen: dict[str, set[str]] = {}
    with (out / DEVICES).open(newline="") as handle:
        for row in csv.DictReader(handle):
            mine = totals.setdefault(
                row["profile"], {"energy_mj": 0.0, "bytes": 0.0, "device_rounds": 0.0}
            )
            seen.setdefault(row["profile"], set()).add(row["device_id"])
            mine["devices"] = len(seen[row["profile"]])
            mine["energy_mj"] += float(row["energy_mj"])
            mine["bytes"] += int(row["bytes_down"]) + int(row["bytes_up"])
            mine["device_rounds"] += 1
            counts = statuses.setdefault(int(row["round"]), {})
            counts[row["status"]] = counts.get(row["status"], 0) + 1
    return totals, statuses


def plot_fleet(out: str | Path, title: str) -> Path:
    """``plots/fleet.png``: who took part in each round (and why not), the fleet by profile, and
    energy and bytes per device round by profile; and ``plots/timeline.png``, each device over
    simulated time (``fedsim.timeline``)."""
    from fedsim.timeline import plot_timeline

    plot_timeline(out, title)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    records = read_rounds(out)
    totals, statuses = _per_profile(out)
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), constrained_layout=True)
    (ax_part, ax_fleet), (ax_energy, ax_bytes) = axes

    rounds = sorted(statuses)
    bottom = np.zeros(len(rounds))
    for status, colour in STATUS_COLOURS.items():
        counts = np.array([statuses[r].get(status, 0) for r in rounds], dtype=float)
        if counts.any():
            ax_part.bar(rounds, counts, bottom=bottom, color=colour, label=status, width=0.8)
            bottom += counts
    offline = [r["offline"] for r in records]
    if any(offline):
        ax_part.plot([r["round"] for r in records], offline, "k--", lw=1, label="offline (fleet)")
    ax_part.set(xlabel="round", ylabel="devices", title="participation per round")
    ax_part.set_ylim(0, max(float(bottom.max(initial=0.0)), 1.0) * 1.35)  # room for the legend
    ax_part.legend(fontsize=7, loc="upper center", ncol=4)
    _integer_rounds(ax_part)

    names = sorted(totals)
    ax_fleet.bar(names, [totals[n]["devices"] for n in names], color="tab:blue")
    ax_fleet.set(ylabel="devices that took part", title="the fleet by profile")
    per = {n: max(totals[n]["device_rounds"], 1.0) for n in names}
    ax_energy.bar(names, [totals[n]["energy_mj"] / per[n] / 1000 for n in names], color="tab:olive")
    ax_energy.set(ylabel="J per device round", title="energy by device class")
    ax_bytes.bar(names, [totals[n]["bytes"] / per[n] / 1024 for n in names], color="tab:cyan")
    ax_bytes.set(ylabel="KiB per device round (down + up)", title="bytes by device class")
    if all(totals[n]["energy_mj"] > 0 for n in names):
        ax_energy.set_yscale("log")  # MCUs and Pis differ by orders of magnitude
    for ax in (ax_fleet, ax_energy, ax_bytes):
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    return _save(fig, Path(out) / "plots" / "fleet.png", title)


def plot_asynchrony(out: str | Path, title: str) -> Path | None:
    """``plots/asynchrony.png`` for asynchronous runs: how stale the applied updates were, and
    how many updates each device delivered, by profile (fast devices deliver more: the fairness
    effect of asynchrony)."""
    records = [r for r in read_rounds(out) if r.get("staleness") is not None]
    if not records:
        return None
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    taus = [t for r in records for t in r["staleness"]]
    delivered: dict[int, int] = {}
    profile: dict[int, str] = {}
    with (Path(out) / DEVICES).open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            d = int(row["device_id"])
            profile[d] = row["profile"]
            delivered[d] = delivered.get(d, 0) + (row["status"] == "ok")
    fig, (ax_tau, ax_dev) = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    top = max(taus, default=0)
    ax_tau.hist(taus, bins=np.arange(top + 2) - 0.5 if top < 60 else 40, color="tab:blue")
    ax_tau.set(xlabel="staleness τ (server updates)", ylabel="applied updates", yscale="log")
    ax_tau.set_title(f"staleness: mean {np.mean(taus):.3g}, max {top}", fontsize=9)
    names = sorted(set(profile.values()))
    colours = {n: f"C{i}" for i, n in enumerate(names)}
    ids = sorted(profile)
    ax_dev.bar(ids, [delivered[d] for d in ids], color=[colours[profile[d]] for d in ids])
    ax_dev.set(xlabel="device", ylabel="updates delivered", title="participation per device")
    ax_dev.legend(handles=[Patch(color=colours[n], label=n) for n in names], fontsize=7)
    for ax in (ax_tau, ax_dev):
        ax.grid(alpha=0.3)
    _integer_rounds(ax_tau, ax_dev)
    return _save(fig, Path(out) / "plots" / "asynchrony.png", title)


def plot_tiers(out: str | Path, title: str) -> Path | None:
    """``plots/tiers.png`` for runs through gateways: bytes per tier and round (what a star
    through forwarding gateways would carry, dashed), and each tier's share of the round's slowest
    branch, with the rounds that lost a gateway's partial or had one offline marked."""
    records = [r for r in read_rounds(out) if r.get("tiers")]
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [r["round"] for r in records]
    names = [t["tier"] for t in records[0]["tiers"]]
    fig, (ax_bytes, ax_time) = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    for i, name in enumerate(names):
        sent = [(r["tiers"][i]["bytes_down"] + r["tiers"][i]["bytes_up"]) / 1e3 for r in records]
        (line,) = ax_bytes.plot(rounds, sent, marker="o", ms=3, label=f"{name} tier")
        if i:  # a star has no tiers above the devices: every device's bytes cross them
            star = [r["tiers"][i]["star_bytes"] / 1e3 for r in records]
            ax_bytes.plot(rounds, star, ls="--", color=line.get_color(), label=f"{name}, as a star")
    ax_bytes.set(xlabel="round", ylabel="kB (down + up)", title="bytes per tier", yscale="log")
    bottom = np.zeros(len(records))
    for i, name in enumerate(names):
        seconds = np.array([r["tiers"][i]["s"] for r in records])
        ax_time.bar(rounds, seconds, bottom=bottom, label=f"{name} tier")
        bottom += seconds
    ax_time.plot(rounds, [r["round_s"] for r in records], "k.", ms=4, label="round")
    hit = [r["round"] for r in records if r["gateways_down"] or r["gateways_lost"]]
    for x in hit:
        ax_time.axvline(x, color="tab:red", alpha=0.25, lw=3)
    ax_time.set(xlabel="round", ylabel="simulated s", title="the slowest branch, by tier")
    if hit:
        ax_time.plot([], [], color="tab:red", alpha=0.25, lw=3, label="gateway down or lost")
    for ax in (ax_bytes, ax_time):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax.xaxis.get_major_locator().set_params(integer=True)
    return _save(fig, Path(out) / "plots" / "tiers.png", title)


def _as_image(sample: NDArray[Any]) -> NDArray[Any] | None:
    """A 2-D picture of one sample if it is image-like (``[1,H,W]``, ``[H,W]``, or a square
    vector), else None."""
    squeezed = np.squeeze(sample)
    if squeezed.ndim == 2:  # an image or a spectrogram; [time, few channels] is a time series
        return squeezed if min(squeezed.shape) >= 8 else None
    side = round(float(np.sqrt(squeezed.size)))
    if squeezed.ndim == 1 and side * side == squeezed.size and side >= 8:
        return squeezed.reshape(side, side)
    return None


def plot_samples(
    x: NDArray[Any], y: NDArray[Any], class_names: tuple[str, ...], title: str, path: Path
) -> Path:
    """A grid a person can check: one row per class (pictures for images and spectrograms,
    curves for time series and tabular samples), or x→y curves for regression."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    if y.dtype.kind == "f":  # regression: one curve per task, points as given
        fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
        ax.scatter(x.reshape(len(x), -1)[:, 0], y.reshape(len(y), -1)[:, 0], s=6)
        ax.set(xlabel="x", ylabel="y", title=title)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path
    classes = list(dict.fromkeys(int(c) for c in y))
    per_class = max(int((y == c).sum()) for c in classes)
    fig, axes = plt.subplots(
        len(classes),
        per_class,
        figsize=(1.1 * per_class + 1.2, 1.1 * len(classes) + 0.6),
        squeeze=False,
        constrained_layout=True,
    )
    for row, c in enumerate(classes):
        members = x[y == c]
        for col in range(per_class):
            ax = axes[row][col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col >= len(members):
                ax.axis("off")
                continue
            picture = _as_image(members[col])
            if picture is not None and picture.shape[0] != picture.shape[1]:
                # a spectrogram [time, frequency]: time left to right, low frequencies down
                ax.imshow(picture.T, cmap="magma", origin="lower", aspect="auto")
            elif picture is not None:
                ax.imshow(picture, cmap="gray_r", aspect="auto", interpolation="nearest")
            else:  # time series [T, C] or a feature vector: curves
                ax.plot(members[col].reshape(members[col].shape[0], -1), lw=0.6)
        name = class_names[c] if c < len(class_names) else str(c)
        name = name if name.isascii() else f"class {c}"  # the plot font may lack the script
        axes[row][0].set_ylabel(name[-16:], rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
