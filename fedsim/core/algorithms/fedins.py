"""FedIns (Feng et al.; design §6.6): instance-adaptive SSF pools on a frozen pre-trained ViT.

Each device trains a pool of ``entries`` SSF sets with keys and heads, each instance using the mean
of its ``top_n`` entries by key similarity; loss (1 − λ)·CE + λ·(1 − Σ cos(q, k)), λ =
``key_weight``. The server averages every pool tensor element-wise (``weighting``). Baselines in
the same family: ``entries: 1, top_n: 1, key_weight: 0`` is federated SSF (one SSF and head per
client, FedAvg'd); with ``train: head`` only the head trains (head-only FedAvg); with ``train:
all`` the backbone trains too (full-model FedAvg, the communication reference).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, model_validator

from fedsim.core.algorithms.base import Learner, ModelAggregator, ModelTask, Problem
from fedsim.core.algorithms.fedavg import SgdEpochs
from fedsim.core.reduce import WeightedMean
from fedsim.core.specs import Spec, Steps, at_most

# the datasets whose instances are plain or inverted (the domain oracle's true domain)
INVERTED_HALF = ("mnist-mixed", "fashion-mixed")

if TYPE_CHECKING:
    from torch import nn

    from fedsim.core.scenario import Scenario

__all__ = ["BackboneSpec", "FedIns"]


class BackboneSpec(Spec):
    """FedIns's frozen backbone: the SSF ViT pre-trained supervised on ``dataset``
    (``fedsim.core.algorithms.backbone``; cached by this config and the seed). ``seed`` pins the
    pre-training seed across runs: the paper fine-tunes one public checkpoint in every run, so
    seeds of a comparison should vary the federated part, not the backbone (default: the
    scenario's seed)."""

    dataset: Literal["fashion-mnist", "mnist-5k"] = Field(
        "fashion-mnist", description="the data the backbone is pre-trained on"
    )
    seed: int | None = Field(None, ge=0, description="pre-training seed (default: the scenario's)")
    steps: Steps = Field(3000, ge=1, description="pre-training steps")
    # the ViT's parameters grow as depth × dim²: 1024 × 1024 × 64 blocks is ~1 GB of weights
    dim: Annotated[int, at_most(1_024, "the ViT's weights grow as dim²")] = Field(
        64, ge=8, description="the ViT's embedding width"
    )
    depth: Annotated[int, at_most(64, "every block's weights are held in memory")] = Field(
        4, ge=1, description="the ViT's transformer blocks"
    )


class FedIns(SgdEpochs):
    lr: float = Field(0.05, gt=0.0, description="device SGD learning rate")
    backbone: BackboneSpec = Field(
        BackboneSpec(), description="the frozen, pre-trained ViT the pool adapts"
    )
    entries: Annotated[int, at_most(1_000, "every entry trains and travels each round")] = Field(
        25, ge=1, description="M: SSF sets (with key and head) in the pool"
    )
    top_n: int = Field(3, ge=1, description="N: entries averaged per instance")
    key_weight: float = Field(0.1, ge=0.0, le=1.0, description="λ of the key-matching loss")
    route: Literal["keys", "inversion"] = Field(
        "keys",
        description="keys (FedIns) or inversion: the domain oracle of the half-inverted "
        "datasets, 2 entries routed by each image's true domain (the routing upper bound)",
    )
    weighting: Literal["uniform", "samples"] = Field(
        "uniform", description="server mean over clients: uniform (reference code) or by samples"
    )
    train: Literal["pool", "head", "all"] = Field(
        "pool",
        description="what trains and travels: the pool (FedIns), only the heads (head-only "
        "FedAvg), or everything, backbone included (full-model FedAvg, the reference)",
    )

    @model_validator(mode="after")
    def _top_within_pool(self) -> FedIns:
        if self.top_n > self.entries:
            raise ValueError(f"top_n ({self.top_n}) cannot exceed entries ({self.entries})")
        if self.route == "inversion" and (self.entries, self.top_n) != (2, 1):
            raise ValueError(
                f"route: inversion sends each image to 1 of 2 entries (one per domain); set "
                f"entries: 2, top_n: 1 (got entries {self.entries}, top_n {self.top_n})"
            )
        return self

    def learner(self) -> Learner:
        from fedsim.core.algorithms.local import LocalSgd

        return LocalSgd(self.lr, self.local_epochs, self.batch_size, key_weight=self.key_weight)

    def build_model(self, task: ModelTask) -> nn.Module:
        """The pre-trained SSF ViT (cached by its config and the scenario seed) with a pool;
        what does not train is frozen (``requires_grad`` off)."""
        from fedsim.core.algorithms.backbone import BackboneConfig, load_backbone
        from fedsim.core.algorithms.ssf import FedInsNet

        b = self.backbone
        seed = task.scenario_seed if b.seed is None else b.seed
        config = BackboneConfig(b.dataset, b.steps, dim=b.dim, depth=b.depth, seed=seed)
        backbone = load_backbone(config, math.isqrt(task.num_features))
        model = FedInsNet(
            backbone, task.num_outputs, self.entries, self.top_n, task.seed, self.route
        )
        for name, p in model.named_parameters():
            p.requires_grad_(not self.frozen(name))
        return model

    def frozen(self, name: str) -> bool:
        if name.startswith("backbone.head."):
            return True  # the pre-training head: FedIns classifies with the pool's heads
        if self.train == "all":
            return False
        if self.train == "head":
            return not name.startswith("head_")
        return name.startswith("backbone.")

    def aggregator(self) -> ModelAggregator:
        """Element-wise mean of the pool tensors (the frozen backbone never votes); ``uniform``:
        every client weighs 1, as in the reference code."""
        return WeightedMean(uniform=self.weighting == "uniform")

    def problems(self, scenario: Scenario) -> list[Problem]:
        problems: list[Problem] = []
        if scenario.task.model != "ssf-vit":
            problems.append(
                (
                    "task.model",
                    "FedIns inserts SSF into the pre-trained ViT backbone",
                    "set task.model: ssf-vit",
                )
            )
        if self.route == "inversion" and scenario.task.dataset not in INVERTED_HALF:
            # elsewhere every image reads as "plain": entry 1 would never train, silently
            problems.append(
                (
                    "algorithm.route",
                    f"route: inversion routes by the inverted half of "
                    f"{' or '.join(INVERTED_HALF)}; {scenario.task.dataset} has no inverted half",
                    "use route: keys, or task.dataset: " + " or ".join(INVERTED_HALF),
                )
            )
        return problems
