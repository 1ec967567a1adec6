"""Federated reconnaissance: class-incremental learning by prototype averaging (issue 8; §6.5).

The encoder is the Conv-4 pre-trained on the *background* alphabets (``fedsim pretrain``; cached);
the classes learned incrementally are those of the *evaluation* alphabets, never seen by it. Each
round is one mission for each of ``--clients`` clients: every client receives ``--per-mission`` new
classes (distinct across clients) with ``--train`` drawings each; every class keeps ``--test`` other
writers' drawings for testing. After every round the server is scored on the test drawings of all
classes seen so far, and on the first round's classes (what it retains). Methods, on the same
frozen embeddings and the same missions:

* **prototypes (federated)**: clients send per-class sums and counts; the server merges them
  (``fedsim.core.algorithms.prototype_sums``); nearest prototype over all seen classes;
* **central prototypes**: the same prototypes computed on the pooled samples (the upper bound for
  this encoder; must equal the federated ones: the max difference is printed);
* **local-only prototypes**: client 0's own prototypes (no merge), scored on every seen class;
* **fine-tuned softmax head**: one linear head trained on each client's mission in turn (SGD,
  ``--epochs``), logits over the seen classes: forgets;
* **FedAvg softmax head**: each round every client trains the global head on its mission, the
  server averages (weighted by samples);
* **each client after its update**: the server's prototypes before the round plus the client's
  own new ones, scored on the classes that client knows (mean over clients).

    .venv/bin/python -m benchmarks.reconnaissance [--dataset kanjivg|omniglot] [--quick]
        [--max-classes 600] [--episodes 2000] [--out results/bench-reconnaissance]

Prints a table and writes ``<out>/<dataset>.md`` and ``.png`` (accuracy vs classes learned).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

from fedsim.core.algorithms.pretrain import (
    EMBEDDING_DIM,
    PretrainConfig,
    characters,
    load_encoder,
    pretrain_encoder,
)
from fedsim.core.algorithms.prototype_sums import (
    PrototypeMerge,
    PrototypeState,
    class_sums,
    report_bytes,
)
from fedsim.core.datasets.episodes import split_alphabets
from fedsim.core.seeds import derive_seed

ROOT = Path(__file__).resolve().parents[1]
D = EMBEDDING_DIM


@dataclass
class Curve:
    name: str
    seen: list[int] = field(default_factory=list)
    all_acc: list[float] = field(default_factory=list)
    base_acc: list[float] = field(default_factory=list)
    bytes_total: int = 0


@torch.no_grad()
def _embed(
    chars: object, classes: NDArray[np.int64], config: PretrainConfig
) -> NDArray[np.float64]:
    images = chars.images[classes]  # type: ignore[attr-defined]
    encoder = load_encoder(config, int(np.prod(images.shape[2:])))
    flat = torch.from_numpy(
        np.ascontiguousarray(images.reshape(-1, images.shape[2] * images.shape[3]))
    )
    out = torch.cat([encoder(flat[i : i + 2048]) for i in range(0, len(flat), 2048)])
    return out.numpy().astype(np.float64).reshape(len(classes), images.shape[1], -1)


def _head_train(
    weight: torch.Tensor,
    bias: torch.Tensor,
    x: NDArray[np.float64],
    y: NDArray[np.int64],
    epochs: int,
    seed: int,
) -> None:
    """SGD (lr 0.1, batch 16) of a softmax head in place on embeddings ``x`` with labels ``y``."""
    g = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y)
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    for _ in range(epochs):
        order = torch.randperm(len(yt), generator=g)
        for start in range(0, len(order), 16):
            rows = order[start : start + 16]
            loss = torch.nn.functional.cross_entropy(xt[rows] @ weight.T + bias, yt[rows])
            gw, gb = torch.autograd.grad(loss, [weight, bias])
            with torch.no_grad():
                weight -= 0.1 * gw
                bias -= 0.1 * gb
    weight.requires_grad_(False)
    bias.requires_grad_(False)


def _head_accuracy(
    weight: torch.Tensor,
    bias: torch.Tensor,
    x: NDArray[np.float64],
    y: NDArray[np.int64],
    seen: NDArray[np.int64],
) -> float:
    logits = torch.from_numpy(x.astype(np.float32)) @ weight[seen].T + bias[seen]
    return float((seen[logits.argmax(1).numpy()] == y).mean())


def bench(args: argparse.Namespace) -> list[Curve]:
    config = PretrainConfig(args.dataset, episodes=args.episodes, seed=args.seed)  # type: ignore[arg-type]

    def show(step: int, loss: float) -> None:
        if step == 1 or step % 100 == 0 or step == config.episodes:
            print(f"pretrain {step}/{config.episodes} episodes, loss {loss:.3f}", flush=True)

    pretrain_encoder(config, show)
    chars = characters(args.dataset, args.seed)
    _, evaluation = split_alphabets(chars, args.seed)
    rng = np.random.default_rng(derive_seed(args.seed, "reconnaissance"))
    classes = rng.permutation(evaluation)[: args.max_classes]
    writers = chars.images.shape[1]
    if args.train + args.test > writers:
        raise SystemExit(f"--train + --test must be ≤ {writers} writers")
    emb = _embed(chars, classes, config)  # [C, W, D]
    order = np.stack([rng.permutation(writers) for _ in classes])
    train_w, test_w = order[:, : args.train], order[:, args.train : args.train + args.test]
    k, clients = args.per_mission, args.clients
    rounds = len(classes) // (k * clients)
    count = len(classes)  # local class ids 0..count-1 in arrival order

    merge = PrototypeMerge(count, D)
    state = PrototypeState.empty(count, D)
    local = PrototypeState.empty(count, D)
    curves = {
        n: Curve(n)
        for n in (
            "prototypes (federated)",
            "central prototypes",
            "local-only prototypes (client 0)",
            "fine-tuned softmax head",
            "FedAvg softmax head",
            "each client after its update (mean; its own classes)",
        )
    }
    ft_w, ft_b = torch.zeros(count, D), torch.zeros(count)
    fa_w, fa_b = torch.zeros(count, D), torch.zeros(count)
    merge_s, max_diff = 0.0, 0.0
    for r in range(rounds):
        first = r * k * clients
        mission = [np.arange(first + c * k, first + (c + 1) * k) for c in range(clients)]
        partial = merge.zero()
        fa_sum_w, fa_sum_b, fa_n = torch.zeros(count, D), torch.zeros(count), 0
        seen = np.arange(first + k * clients)
        client_acc = []
        for c, cls in enumerate(mission):
            x = np.concatenate([emb[j, train_w[j]] for j in cls])
            y = np.repeat(cls, args.train)
            report = class_sums(f"{c}:{r}", x, y)
            partial = merge.accumulate(partial, report)
            # the client right after its update: the server's prototypes plus its own new ones
            view = merge.finalize(state, merge.accumulate(merge.zero(), report))
            knows = view.seen
            xc = np.concatenate([emb[j, test_w[j]] for j in knows])
            yc = np.repeat(knows, args.test)
            client_acc.append(float((view.classify(xc) == yc).mean()))
            if c == 0:
                local = merge.finalize(
                    local, merge.accumulate(merge.zero(), class_sums(f"{c}:{r}", x, y))
                )
            _head_train(ft_w, ft_b, x, y, args.epochs, derive_seed(args.seed, "ft", r, c))
            w, b = fa_w.clone(), fa_b.clone()
            _head_train(w, b, x, y, args.epochs, derive_seed(args.seed, "fa", r, c))
            fa_sum_w += len(y) * w
            fa_sum_b += len(y) * b
            fa_n += len(y)
        start = time.perf_counter()
        state = merge.finalize(state, partial)
        merge_s += time.perf_counter() - start
        fa_w, fa_b = fa_sum_w / fa_n, fa_sum_b / fa_n

        xt = np.concatenate([emb[j, test_w[j]] for j in seen])
        yt = np.repeat(seen, args.test)
        base = yt < k * clients
        pooled = np.stack([emb[j, train_w[j]].mean(0) for j in seen])
        max_diff = max(max_diff, float(np.abs(state.prototypes() - pooled).max()))
        dist = ((xt[:, None, :] - pooled[None]) ** 2).sum(-1)
        central_pred = seen[dist.argmin(1)]
        preds = {
            "prototypes (federated)": state.classify(xt),
            "central prototypes": central_pred,
            "local-only prototypes (client 0)": local.classify(xt),
        }
        for name, pred in preds.items():
            curves[name].all_acc.append(float((pred == yt).mean()))
            curves[name].base_acc.append(float((pred[base] == yt[base]).mean()))
        for name, (w, b) in {
            "fine-tuned softmax head": (ft_w, ft_b),
            "FedAvg softmax head": (fa_w, fa_b),
        }.items():
            curves[name].all_acc.append(_head_accuracy(w, b, xt, yt, seen))
            curves[name].base_acc.append(_head_accuracy(w, b, xt[base], yt[base], seen))
        after = curves["each client after its update (mean; its own classes)"]
        after.all_acc.append(float(np.mean(client_acc)))
        after.base_acc.append(float("nan"))
        for cv in curves.values():
            cv.seen.append(len(seen))
        curves["prototypes (federated)"].bytes_total += clients * report_bytes(k, D)
        curves["FedAvg softmax head"].bytes_total += clients * 2 * len(seen) * (D + 1) * 4
        print(
            f"round {r + 1}/{rounds}: {len(seen)} classes, "
            + ", ".join(f"{n} {cv.all_acc[-1]:.3f}" for n, cv in curves.items()),
            flush=True,
        )
    learned = rounds * k * clients
    table = _table(args, curves, learned, max_diff, merge_s / max(learned, 1))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.dataset}.md").write_text(table + "\n", encoding="utf-8")
    _plot(args, list(curves.values()), args.out / f"{args.dataset}.png")
    print(table)
    return list(curves.values())


def _table(
    args: argparse.Namespace,
    curves: dict[str, Curve],
    learned: int,
    max_diff: float,
    merge_per_class: float,
) -> str:
    marks = sorted({m for m in (100, 300, learned) if m <= learned})
    lines = [
        f"### {args.dataset}: {learned} unseen classes learned by {args.clients} clients, "
        f"{args.per_mission} new classes × {args.train} drawings per client per mission; "
        "accuracy over all seen classes",
        "",
        "| method | "
        + " | ".join(f"after {m}" for m in marks)
        + " | first round's classes at the end | bytes per class learned |",
        "|---|" + "---:|" * (len(marks) + 2),
    ]
    for cv in curves.values():
        at = [cv.all_acc[cv.seen.index(min(cv.seen, key=lambda s: abs(s - m)))] for m in marks]
        per_class = f"{cv.bytes_total / learned:,.0f}" if cv.bytes_total else "-"
        lines.append(
            f"| {cv.name} | "
            + " | ".join(f"{a:.3f}" for a in at)
            + f" | {cv.base_acc[-1]:.3f} | {per_class} |"
        )
    lines += [
        "",
        f"federated vs central prototypes: max |difference| {max_diff:.2e}; "
        f"server merge {merge_per_class * 1e6:.1f} µs per class learned",
    ]
    return "\n".join(lines)


def _plot(args: argparse.Namespace, curves: list[Curve], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    for cv in curves:
        style = "--" if cv.name == "central prototypes" else "-"
        ax.plot(cv.seen, cv.all_acc, style, marker="o", ms=2, label=cv.name)
    ax.set(
        xlabel="classes learned",
        ylabel="accuracy over all seen classes",
        ylim=(0, 1),
        title=f"federated reconnaissance on {args.dataset}",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.reconnaissance", description=__doc__
    )
    parser.add_argument("--dataset", choices=["kanjivg", "omniglot"], default="kanjivg")
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--per-mission", type=int, default=5)
    parser.add_argument("--train", type=int, default=15)
    parser.add_argument("--test", type=int, default=5)
    parser.add_argument("--max-classes", type=int, default=600)
    parser.add_argument(
        "--epochs", type=int, default=5, help="softmax-head baselines: epochs per mission"
    )
    parser.add_argument("--episodes", type=int, default=2000, help="encoder pre-training episodes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick", action="store_true", help="100 classes, 200 pre-training episodes"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench-reconnaissance")
    args = parser.parse_args(argv)
    if args.quick:
        args.max_classes, args.episodes = 100, 200
    bench(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
