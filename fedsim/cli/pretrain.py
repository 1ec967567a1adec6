"""``fedsim pretrain``: the encoders and backbones that few-shot and FedIns scenarios start from,
trained once and cached by their config."""

from __future__ import annotations

import typer

from fedsim.cli.format import err, out
from fedsim.core.errors import FedsimError

__all__ = ["BACKBONE_DATASETS", "pretrain", "register"]

BACKBONE_DATASETS = ("fashion-mnist", "mnist-5k")


def register(app: typer.Typer) -> None:
    app.command()(pretrain)


def pretrain(
    dataset: str = typer.Option(
        "kanjivg",
        help="kanjivg or omniglot (Conv-4), kws or har (MLP): its background classes; "
        "fashion-mnist or mnist-5k: the FedIns ViT backbone (supervised, --episodes steps)",
    ),
    episodes: int = typer.Option(2000, min=1, help="training episodes"),
    way: int = typer.Option(5, min=2, help="classes per episode"),
    shot: int = typer.Option(5, min=1, help="support drawings per class"),
    query: int = typer.Option(5, min=1, help="query drawings per class"),
    seed: int = typer.Option(0, help="alphabet split, initialisation and episodes"),
) -> None:
    """Pre-train a prototypical encoder on a dataset's background classes (Conv-4 on character
    sets, an MLP on kws/har; cached by config), then score it on 1-/5-shot episodes of the
    classes it never saw (the evaluation alphabets, or the other half of the classes)."""
    from fedsim.core.algorithms.pretrain import (
        CHARACTER_SETS,
        POOLED,
        PretrainConfig,
        few_shot_accuracy,
        pretrain_encoder,
    )
    from fedsim.core.data import cache_dir
    from fedsim.progress import training_bar

    if dataset in BACKBONE_DATASETS:  # FedIns: a supervised ViT backbone (episodes = steps)
        _pretrain_backbone(dataset, episodes, seed)
        return
    if dataset not in CHARACTER_SETS + POOLED:
        known = ", ".join(CHARACTER_SETS + POOLED + BACKBONE_DATASETS)
        raise FedsimError("--dataset", f"cannot pre-train on '{dataset}'", f"use one of {known}")
    architecture = "conv4" if dataset in CHARACTER_SETS else "mlp-100"
    config = PretrainConfig(dataset, architecture, episodes, way, shot, query, seed=seed)
    with training_bar("pretrain", "episodes", episodes, err) as progress:
        pretrain_encoder(config, progress)
    out.print(f"encoder: {cache_dir() / f'pretrain-{config.key()}.npz'}")
    for k in (1, 5):
        mean, half = few_shot_accuracy(config, way, k)
        out.print(
            f"{way}-way {k}-shot on unseen classes: {mean:.3f} ± {half:.3f} (95% CI, 200 episodes)"
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
