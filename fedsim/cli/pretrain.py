"""``fedsim pretrain``: the encoders and backbones that few-shot and FedIns scenarios start from,
trained once and cached by their config."""

from __future__ import annotations

from typing import Any

import typer

from fedsim.cli.format import FormatOpt, Records, check_format, err, out, print_json, print_records
from fedsim.core.errors import FedsimError

__all__ = ["BACKBONE_DATASETS", "pretrain", "register"]

BACKBONE_DATASETS = ("fashion-mnist", "mnist-5k")


def register(app: typer.Typer) -> None:
    app.command()(pretrain)


def pretrain(
    dataset: str = typer.Option(
        "kanjivg+omniglot",
        help="kanjivg or omniglot (Conv-4), kws or har (MLP): its background classes; a mix "
        "such as kanjivg+omniglot adds every character of the sets after the first; "
        "fashion-mnist or mnist-5k: the FedIns ViT backbone (supervised, --episodes steps)",
    ),
    episodes: int | None = typer.Option(
        None, min=1, help="training episodes [default: 1500 on characters, else 2000]"
    ),
    way: int | None = typer.Option(
        None, min=2, help="classes per episode [default: 20 on characters, else 5]"
    ),
    shot: int | None = typer.Option(
        None, min=1, help="support drawings per class [default: 1 on characters, else 5]"
    ),
    query: int | None = typer.Option(None, min=1, help="query drawings per class [default: 5]"),
    lr: float = typer.Option(1e-3, min=1e-12, help="Adam's learning rate"),
    lr_decay: float | None = typer.Option(
        None,
        min=0.0,
        max=1.0,
        help="the last episode's rate as a fraction of --lr, along a cosine "
        "[default: 0.02 on characters, else 1: constant]",
    ),
    seed: int = typer.Option(0, help="alphabet split, initialisation and episodes"),
    eval_episodes: int = typer.Option(200, min=2, help="scoring episodes on the unseen classes"),
    fmt: str = FormatOpt,
) -> None:
    """Pre-train a prototypical encoder on a dataset's background classes (Conv-4 on character
    sets, an MLP on kws/har; cached by config), then score it on 1-/5-shot episodes of the
    classes it never saw (the evaluation alphabets, or the other half of the classes) and, for a
    Conv-4 encoder, on the 20 official Omniglot 20-way 1-shot runs."""
    from fedsim.core.algorithms.pretrain import (
        CHARACTER_SETS,
        POOLED,
        POOLED_DEFAULT,
        PretrainConfig,
        character_sets,
        few_shot_accuracy,
        official_runs_error,
        pretrain_encoder,
    )
    from fedsim.core.data import cache_dir
    from fedsim.progress import training_bar

    check_format(fmt)
    if dataset in BACKBONE_DATASETS:  # FedIns: a supervised ViT backbone (episodes = steps)
        _pretrain_backbone(dataset, 2000 if episodes is None else episodes, seed)
        return
    character_set = character_sets(dataset) is not None
    if not character_set and dataset not in POOLED:
        known = ", ".join(CHARACTER_SETS + POOLED + BACKBONE_DATASETS)
        raise FedsimError(
            "--dataset",
            f"cannot pre-train on '{dataset}'",
            f"use one of {known}, or character sets joined by '+' (kanjivg+omniglot)",
        )
    architecture = "conv4" if character_set else "mlp-100"
    base = PretrainConfig() if character_set else POOLED_DEFAULT
    config = PretrainConfig(
        dataset,
        architecture,
        base.episodes if episodes is None else episodes,
        base.n_way if way is None else way,
        base.k_shot if shot is None else shot,
        base.q_queries if query is None else query,
        lr,
        seed=seed,
        lr_decay=base.lr_decay if lr_decay is None else lr_decay,
    )
    with training_bar("pretrain", "episodes", config.episodes, err) as progress:
        pretrain_encoder(config, progress)
    result: dict[str, Any] = {"encoder": str(cache_dir() / f"pretrain-{config.key()}.npz")}
    rows = []
    for k in (1, 5):
        mean, half = few_shot_accuracy(config, config.n_way, k, eval_episodes)
        rows.append(
            {
                "evaluation": f"{config.n_way}-way {k}-shot on unseen classes "
                f"({eval_episodes} episodes)",
                "metric": "accuracy",
                "mean": mean,
                "ci95": half,
            }
        )
    if character_set:
        mean, half, errors = official_runs_error(config)
        rows.append(
            {
                "evaluation": f"official Omniglot 20-way 1-shot runs ({len(errors)} runs)",
                "metric": "error",
                "mean": mean,
                "ci95": half,
            }
        )
        result["official_runs"] = {"error": mean, "ci95": half, "per_run": errors}
    _report(result, rows, fmt)


def _report(result: dict[str, Any], rows: list[dict[str, Any]], fmt: str) -> None:
    """Text lines (the default), CSV rows, or one JSON object with every number."""
    if fmt == "json":
        print_json({**result, "evaluations": rows})
    elif fmt == "csv":
        print_records(Records(rows, ("evaluation", "metric", "mean", "ci95")), fmt)
    else:
        out.print(f"encoder: {result['encoder']}")
        for row in rows:
            out.print(
                f"{row['evaluation']}: {row['metric']} {row['mean']:.3f} ± {row['ci95']:.3f} "
                "(95% CI)"
            )


def _pretrain_backbone(dataset: str, steps: int, seed: int) -> None:
    """The FedIns ViT backbone: supervised on ``dataset``, cached; prints its test accuracy."""
    from fedsim.core.algorithms.backbone import BackboneConfig, backbone_accuracy, pretrain_backbone
    from fedsim.core.data import cache_dir
    from fedsim.progress import training_bar

    config = BackboneConfig(dataset, steps, seed=seed)
    with training_bar("backbone", "steps", steps, err) as progress:
        pretrain_backbone(config, progress)
    out.print(f"backbone: {cache_dir() / f'backbone-{config.key()}.npz'}")
    out.print(f"test accuracy on {dataset}: {backbone_accuracy(config):.4f}")
