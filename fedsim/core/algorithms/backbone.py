"""The frozen pre-trained backbone of FedIns (design §6.6), trained in the project.

No pre-trained ViT weights can be downloaded here, so the small ``SsfViT`` is trained supervised
(cross-entropy, Adam) on a base dataset (Fashion-MNIST from Debian by default) for ``steps``
mini-batches, cached under ``cache_dir()`` keyed by a hash of the whole config, and frozen; FedIns
then runs on a *different* target dataset.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from fedsim.core.algorithms.ssf import SsfViT
from fedsim.core.data import cached_arrays, load_task_data
from fedsim.core.models import get_arrays, set_arrays
from fedsim.core.seeds import derive_seed

__all__ = ["BackboneConfig", "backbone_accuracy", "load_backbone", "pretrain_backbone"]

VERSION = 1


@dataclass(frozen=True)
class BackboneConfig:
    dataset: str = "fashion-mnist"
    steps: int = 3000
    batch_size: int = 128
    lr: float = 1e-3
    dim: int = 64
    depth: int = 4
    heads: int = 4
    hidden: int = 128
    patch: int = 7
    seed: int = 0

    def key(self) -> str:
        text = json.dumps({**asdict(self), "version": VERSION}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def build(self, side: int, classes: int) -> SsfViT:
        torch.manual_seed(derive_seed(self.seed, "backbone"))
        return SsfViT(side, self.patch, self.dim, self.depth, self.heads, self.hidden, classes)


def _side(num_features: int) -> int:
    side = math.isqrt(num_features)
    if side * side != num_features:
        raise ValueError(f"the ViT backbone takes square images, got {num_features} values")
    return side


def pretrain_backbone(
    config: BackboneConfig, progress: Callable[[int, float], None] | None = None
) -> dict[str, NDArray[Any]]:
    """The trained ViT's ``state_dict`` arrays (cached by ``config.key()``); ``progress`` gets
    (step, loss) while training, never when the checkpoint is cached."""

    def build() -> dict[str, NDArray[Any]]:
        data = load_task_data(config.dataset, config.seed)
        model = config.build(_side(data.num_features), data.num_outputs)
        x, y = torch.from_numpy(data.x_train.reshape(len(data.x_train), -1)), data.y_train
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        rng = np.random.default_rng(derive_seed(config.seed, "backbone-batches"))
        model.train()
        with torch.enable_grad():
            for step in range(config.steps):
                rows = torch.from_numpy(rng.choice(len(y), config.batch_size, replace=False))
                loss = torch.nn.functional.cross_entropy(model(x[rows]), torch.from_numpy(y)[rows])
                optimizer.zero_grad()
                torch.autograd.backward(loss)
                optimizer.step()
                if progress is not None:
                    progress(step + 1, float(loss.item()))
        return dict(zip(model.state_dict(), get_arrays(model), strict=True))

    return cached_arrays("backbone", config.key(), build)


def load_backbone(config: BackboneConfig, side: int = 28) -> SsfViT:
    """The pre-trained ViT, frozen and in eval mode (its own head is unused by FedIns)."""
    trained = pretrain_backbone(config)
    model = config.build(side, int(trained["head.bias"].shape[0]))
    set_arrays(model, list(trained.values()))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@torch.no_grad()
def backbone_accuracy(config: BackboneConfig) -> float:
    """The pre-trained ViT's accuracy on its base dataset's test split."""
    data = load_task_data(config.dataset, config.seed)
    model = load_backbone(config, _side(data.num_features))
    x = torch.from_numpy(data.x_test.reshape(len(data.x_test), -1))
    predictions = torch.cat([model(x[i : i + 1024]).argmax(1) for i in range(0, len(x), 1024)])
    return float((predictions.numpy() == data.y_test).mean())
