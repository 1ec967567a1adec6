"""Plots of a run's metrics, rendered from ``rounds.jsonl`` (headless: the Agg backend)."""

from __future__ import annotations

from pathlib import Path

from fedsim.core.results import read_rounds

__all__ = ["plot_accuracy"]


def plot_accuracy(out: str | Path, title: str) -> Path:
    """``plots/accuracy.png``: global test accuracy and loss vs round, failures marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_rounds(out)
    rounds = [r for r in records if r["accuracy"] is not None]
    failed = [r for r in records if r["failures"]]
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(9, 3.4), constrained_layout=True)
    x = [r["round"] for r in rounds]
    ax_acc.plot(x, [r["accuracy"] for r in rounds], marker="o", ms=3, label="global test")
    ax_acc.set(xlabel="round", ylabel="accuracy", ylim=(0, 1), title="accuracy")
    ax_loss.plot(x, [r["loss"] for r in rounds], marker="o", ms=3, color="tab:red")
    ax_loss.set(xlabel="round", ylabel="cross-entropy", title="loss")
    for r in failed:
        ax_acc.axvline(r["round"], color="grey", alpha=0.3, lw=1)
    if failed:
        ax_acc.plot([], [], color="grey", alpha=0.5, label="round with device failures")
    ax_acc.legend(loc="lower right", fontsize=8)
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    path = Path(out) / "plots" / "accuracy.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
