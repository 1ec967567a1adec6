"""Episodic pre-training of a prototypical encoder on background characters (design §6.5).

Conv-4 learns to embed characters so that a class is its mean embedding: each episode draws
``n_way`` classes of the *background* alphabets (each rotated by 0/90/180/270°, a class of its
own, as in the Omniglot literature), ``k_shot`` support and ``q_queries`` query drawings per class
from disjoint writers; the loss is cross-entropy over negative squared distances from each query to
the support prototypes (Snell et al.), Adam at ``lr``. The encoder's weights are cached under
``cache_dir()`` keyed by a hash of the whole config, so runs and benchmarks reuse one checkpoint;
nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from fedsim.core.data import cached_arrays
from fedsim.core.datasets.episodes import CharacterSet, episode, split_alphabets
from fedsim.core.datasets.omniglot import OneShotRun
from fedsim.core.models import build_model, encoder_of, get_arrays, set_arrays
from fedsim.core.seeds import derive_seed
from fedsim.core.stats import mean_ci95

__all__ = [
    "EMBEDDING_DIM",
    "POOLED_DEFAULT",
    "PretrainConfig",
    "character_sets",
    "characters",
    "load_encoder",
    "official_runs_error",
    "pretrain_encoder",
    "runs_errors",
]

EMBEDDING_DIM = 64
VERSION = 1  # bump when the training procedure changes: old checkpoints are not reused


@dataclass(frozen=True)
class PretrainConfig:
    """The defaults are measured on the 20 official Omniglot 20-way 1-shot runs
    (docs/reproductions/encoder.md): wide 1-shot episodes of KanjiVG's background alphabets and
    every real Omniglot background character, with a cosine decay, ~5 CPU-minutes."""

    # a character set (kanjivg, omniglot), a mix of them ("kanjivg+omniglot": the first one's
    # background alphabets and every character of the others), or a pooled dataset (kws, har)
    dataset: str = "kanjivg+omniglot"
    architecture: str = "conv4"
    episodes: int = 1500
    n_way: int = 20
    k_shot: int = 1
    q_queries: int = 5
    lr: float = 1e-3
    rotations: bool = True
    seed: int = 0
    # the last episode's learning rate as a fraction of ``lr``, reached along a cosine (1: constant)
    lr_decay: float = 0.02

    def key(self) -> str:
        fields = asdict(self)
        if self.lr_decay == 1.0:  # the constant rate trains as before lr_decay existed: same key
            del fields["lr_decay"]
        text = json.dumps({**fields, "version": VERSION}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


CHARACTER_SETS = ("kanjivg", "omniglot")


def character_sets(dataset: str) -> tuple[str, ...] | None:
    """The character sets a Conv-4 encoder trains on (``"kanjivg+omniglot"`` → both; the first is
    the one whose evaluation alphabets it never sees), or None if ``dataset`` is not such a mix."""
    names = tuple(dataset.split("+"))
    if len(set(names)) != len(names) or not set(names) <= set(CHARACTER_SETS):
        return None
    return names


POOLED = ("kws", "har")  # background/evaluation: a seeded half of the classes each
# a pooled dataset has a handful of background classes (kws 6, har 3): narrow episodes
POOLED_DEFAULT = PretrainConfig("kws", "mlp-100", 2000, 5, 5, 5, lr_decay=1.0)


def characters(dataset: str, seed: int) -> CharacterSet:
    if dataset == "kanjivg":
        from fedsim.core.datasets import kanjivg

        return kanjivg.render_characters(seed=seed, progress=True)
    if dataset == "omniglot":
        from fedsim.core.datasets import omniglot

        return omniglot.load_characters()
    raise ValueError(f"not a character set (kanjivg or omniglot): {dataset!r}")


Episode = tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.float32], NDArray[np.int64]]


class _Source(Protocol):
    num_features: int

    def episode(
        self, background: bool, n_way: int, k_shot: int, q: int, rng: np.random.Generator
    ) -> Episode: ...


class _Characters:
    """Episodes of a character set: background alphabets (with rotation classes if asked), and
    every character of the other sets of a mix (whose evaluation alphabets are not the scored
    ones: the official Omniglot runs use alphabets no shipped set has), for training; evaluation
    alphabets for scoring; support and query writers disjoint. A training episode draws its
    classes from one set, each set equally often (a set's hands are its own)."""

    def __init__(self, config: PretrainConfig) -> None:
        first, *others = character_sets(config.dataset) or (config.dataset,)
        self.chars = characters(first, config.seed)
        self.background, self.evaluation = split_alphabets(self.chars, config.seed)
        self.num_features = int(np.prod(self.chars.images.shape[2:]))
        self.pools: list[tuple[CharacterSet, NDArray[np.int64]]] = [
            _training_pool(self.chars, self.background, config.rotations)
        ]
        for name in others:
            chars = characters(name, config.seed)
            everything = np.arange(chars.images.shape[0], dtype=np.int64)
            self.pools.append(_training_pool(chars, everything, config.rotations))

    def episode(
        self, background: bool, n_way: int, k_shot: int, q: int, rng: np.random.Generator
    ) -> Episode:
        if background:
            one = len(self.pools) == 1  # one set: no draw, so its episodes stay as they were
            pool, classes = self.pools[0 if one else int(rng.integers(len(self.pools)))]
            return episode(pool, classes, n_way, k_shot, q, rng)
        return episode(self.chars, self.evaluation, n_way, k_shot, q, rng)


def _training_pool(
    chars: CharacterSet, classes: NDArray[np.int64], rotations: bool
) -> tuple[CharacterSet, NDArray[np.int64]]:
    """``chars`` and the training ``classes`` in it; with ``rotations`` each class rotated by
    90°, 180° and 270° is a class of its own (4× the classes)."""
    if not rotations:
        return chars, classes
    count = chars.images.shape[0]
    return _rotated(chars), np.concatenate([classes + k * count for k in range(4)])


class _Pooled:
    """Episodes of a pooled dataset's training samples: a seeded half of its classes to train on
    (``split_classes``), the other half (the ``<name>-unseen`` dataset's classes) to score on."""

    def __init__(self, config: PretrainConfig) -> None:
        from fedsim.core.data import load_task_data
        from fedsim.core.datasets.fewshot import split_classes

        self.data = load_task_data(config.dataset, config.seed)
        self.background, self.evaluation = split_classes(self.data.num_classes, config.seed)
        self.num_features = self.data.num_features
        self.rows = {
            c: np.flatnonzero(self.data.y_train == c) for c in range(self.data.num_classes)
        }

    def episode(
        self, background: bool, n_way: int, k_shot: int, q: int, rng: np.random.Generator
    ) -> Episode:
        classes = rng.choice(
            self.background if background else self.evaluation, n_way, replace=False
        )
        support, query = [], []
        for c in classes.tolist():
            picked = rng.choice(self.rows[c], k_shot + q, replace=False)
            support.append(picked[:k_shot])
            query.append(picked[k_shot:])
        x = self.data.x_train
        labels = np.arange(n_way, dtype=np.int64)
        return (
            x[np.concatenate(support)],
            np.repeat(labels, k_shot),
            x[np.concatenate(query)],
            np.repeat(labels, q),
        )


def _source(config: PretrainConfig) -> _Source:
    if character_sets(config.dataset):
        return _Characters(config)
    if config.dataset in POOLED:
        return _Pooled(config)
    raise ValueError(
        f"pre-training reads a character set ({', '.join(CHARACTER_SETS)}, or several joined by "
        f"'+') or a pooled dataset "
        f"({', '.join(POOLED)}), not {config.dataset!r}"
    )


@dataclass(frozen=True)
class _Rotated:
    """A character set with every class also rotated by 90°, 180° and 270° (4× the classes)."""

    images: NDArray[np.float32]
    alphabets: NDArray[np.int64]


def _rotated(chars: CharacterSet) -> _Rotated:
    images = np.concatenate([np.rot90(chars.images, k, axes=(2, 3)) for k in range(4)])
    return _Rotated(np.ascontiguousarray(images), np.tile(chars.alphabets, 4))


def prototype_logits(
    support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, n: int
) -> torch.Tensor:
    """Negative squared distances ``[queries, n]`` from query embeddings to class means."""
    protos = torch.stack([support[labels == c].mean(0) for c in range(n)])
    return -(torch.cdist(query, protos) ** 2)


def pretrain_encoder(
    config: PretrainConfig, progress: Callable[[int, float], None] | None = None
) -> dict[str, NDArray[Any]]:
    """The trained encoder's ``state_dict`` arrays (cached by ``config.key()``); ``progress`` is
    called with (episode, loss) while training, never when the checkpoint is cached."""

    def build() -> dict[str, NDArray[Any]]:
        source = _source(config)
        seed = derive_seed(config.seed, "pretrain")
        model = build_model(config.architecture, source.num_features, 1, seed)
        encoder = encoder_of(model)
        rng = np.random.default_rng(derive_seed(config.seed, "episodes"))
        encoder.train()
        with torch.enable_grad():  # even when a caller evaluates under no_grad
            _train(encoder, source, config, rng, progress)
        return dict(zip(model.state_dict(), get_arrays(model), strict=True))

    return cached_arrays("pretrain", config.key(), build)


def _train(
    encoder: nn.Module,
    source: _Source,
    config: PretrainConfig,
    rng: np.random.Generator,
    progress: Callable[[int, float], None] | None,
) -> None:
    optimizer = torch.optim.Adam(encoder.parameters(), lr=config.lr)
    schedule = None  # a constant rate takes no scheduler: its runs stay as they were
    if config.lr_decay != 1.0:
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, max(config.episodes - 1, 1), eta_min=config.lr * config.lr_decay
        )
    for step in range(config.episodes):
        xs, ys, xq, yq = source.episode(True, config.n_way, config.k_shot, config.q_queries, rng)
        support = encoder(torch.from_numpy(xs).flatten(1))
        query = encoder(torch.from_numpy(xq).flatten(1))
        logits = prototype_logits(support, torch.from_numpy(ys), query, config.n_way)
        loss = nn.functional.cross_entropy(logits, torch.from_numpy(yq))
        optimizer.zero_grad()
        torch.autograd.backward(loss)
        optimizer.step()
        if schedule is not None:
            schedule.step()
        if progress is not None:
            progress(step + 1, float(loss.item()))


def load_encoder(config: PretrainConfig, num_features: int = 784) -> nn.Module:
    """The pre-trained encoder in eval mode (BatchNorm uses its running statistics)."""
    model = build_model(config.architecture, num_features, 1, 0)
    set_arrays(model, list(pretrain_encoder(config).values()))
    encoder = encoder_of(model)
    encoder.eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    return encoder


def few_shot_accuracy(
    config: PretrainConfig, n_way: int, k_shot: int, episodes: int = 200, q_queries: int = 5
) -> tuple[float, float]:
    """Mean and 95% half-width of nearest-prototype accuracy on ``n_way``-way ``k_shot``-shot
    episodes of the *evaluation* alphabets (never seen in pre-training)."""
    source = _source(config)
    encoder = load_encoder(config, source.num_features)
    rng = np.random.default_rng(derive_seed(config.seed, "few-shot-eval", n_way, k_shot))
    scores = []
    for _ in range(episodes):
        xs, ys, xq, yq = source.episode(False, n_way, k_shot, q_queries, rng)
        with torch.no_grad():
            support = encoder(torch.from_numpy(xs).flatten(1))
            query = encoder(torch.from_numpy(xq).flatten(1))
            logits = prototype_logits(support, torch.from_numpy(ys), query, n_way)
        scores.append(float((logits.argmax(1).numpy() == yq).mean()))
    values = np.array(scores)
    return float(values.mean()), float(1.96 * values.std(ddof=1) / np.sqrt(len(values)))


def runs_errors(
    embed: Callable[[NDArray[np.float32]], NDArray[np.float32]], runs: Sequence[OneShotRun]
) -> list[float]:
    """Each run's error rate: a test image is classified as its nearest training image (squared
    Euclidean distance between ``embed``'s rows; a tie goes to the first), as Lake et al. score
    the 20-way 1-shot runs."""
    errors = []
    for run in runs:
        train = embed(run.training[:, None]).astype(np.float64)  # [20, D]
        test = embed(run.test[:, None]).astype(np.float64)  # [20, D]
        distances = ((test[:, None, :] - train[None, :, :]) ** 2).sum(-1)  # [test, train]
        errors.append(float((distances.argmin(1) != run.answers).mean()))
    return errors


def official_runs_error(config: PretrainConfig) -> tuple[float, float, list[float]]:
    """Mean error of the pre-trained encoder on the 20 official Omniglot 20-way 1-shot runs
    (evaluation alphabets: never in any training pool here), the half-width of its 95% Student-t
    interval over the runs, and the per-run errors."""
    from fedsim.core.datasets.omniglot import load_runs

    encoder = load_encoder(config)

    def embed(images: NDArray[np.float32]) -> NDArray[np.float32]:
        with torch.no_grad():
            embedded: NDArray[np.float32] = encoder(torch.from_numpy(images)).numpy()
        return embedded

    errors = runs_errors(embed, load_runs())
    mean, half = mean_ci95(errors)
    return mean, half, errors
