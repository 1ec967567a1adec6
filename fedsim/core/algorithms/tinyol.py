"""Federated TinyOL (Ren et al.; design §6.1): the model minus its last layer is a frozen,
pre-trained feature extractor (in flash); each device trains only the output layer, one SGD step
per arriving sample (batch 1), ``passes`` times over its stream, keeping nothing but the layer,
with ``edge.online_head.OnlineHead`` (numpy, the firmware's reference). The server averages the
layers (FedAvg of heads). The one algorithm an attached microcontroller runs itself
(``on_device``).

The extractor is pre-trained on classes the devices never learn: ``extractor`` (an
``EncoderSpec``, as prototype averaging's encoder) is trained episodically on the *background*
half of a dataset and cached (``pretrain``); the devices learn its ``<dataset>-unseen`` classes.
``extractor: auto`` (the default) does so whenever the task is such a dataset; ``random`` keeps the
task model's random initial body (the head then learns on random features: only for a task with
nothing held out to pre-train on, e.g. the attached-device demo on digits).

``normalize`` standardises each feature on the fly with running statistics (Welford), as TinyOL
does; the statistics sit in the output layer (``feature_norm.NormalizedLinear``), so they travel
and are averaged with it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from fedsim.core.algorithms.base import Algorithm, Learner, ModelTask, Problem
from fedsim.core.algorithms.prototypes import EncoderSpec
from fedsim.core.specs import Epochs

if TYPE_CHECKING:
    from torch import nn

    from fedsim.core.algorithms.pretrain import PretrainConfig
    from fedsim.core.fleet_spec import AttachedSpec
    from fedsim.core.scenario import Scenario

__all__ = ["TinyOL"]

log = logging.getLogger("fedsim.server")

PRETRAINABLE = ("kanjivg", "omniglot", "kws", "har")  # EncoderSpec.dataset's choices
# episodes of at most as many classes as the background half holds (har: 6 activities, 3 of them)
AUTO_WAYS = {"har": 3}


class TinyOL(Algorithm):
    lr: float = Field(0.01, gt=0.0, description="per-sample SGD learning rate")
    passes: Epochs = Field(1, ge=1, description="passes over the device's stream per round")
    extractor: EncoderSpec | Literal["auto", "random"] = Field(
        "auto",
        description="the frozen extractor: pre-trained on a dataset's background classes (the "
        "devices learn its -unseen classes); auto: that, for a <dataset>-unseen task, else random",
    )
    normalize: bool = Field(
        True, description="standardise features on the fly with running mean and variance"
    )

    def encoder(self, dataset: str) -> EncoderSpec | None:
        """The extractor's pre-training for task ``dataset`` (None: the random initial body)."""
        if isinstance(self.extractor, EncoderSpec):
            return self.extractor
        base = dataset.removesuffix("-unseen")
        if self.extractor == "auto" and dataset.endswith("-unseen") and base in PRETRAINABLE:
            ways = {"n_way": AUTO_WAYS[base]} if base in AUTO_WAYS else {}
            return EncoderSpec(dataset=base, **ways)  # type: ignore[arg-type]
        return None

    def learner(self) -> Learner:
        from fedsim.core.algorithms.local import OnlineHeadLearner

        return OnlineHeadLearner(self.lr, self.passes)

    def build_model(self, task: ModelTask) -> nn.Module:
        model = task.build()
        if not self.normalize:
            return model
        from fedsim.core.algorithms.feature_norm import with_feature_norm

        return with_feature_norm(model)

    def pretrained_for(self, model: nn.Module, seed: int, dataset: str) -> None:
        """The pre-trained extractor (cached; trained now if not) replaces the random body; the
        output layer keeps its initial weights."""
        spec = self.encoder(dataset)
        if spec is not None:
            load_extractor(model, spec, seed)
        elif self.extractor == "auto":
            log.warning(
                "tinyol on %s: no held-out classes to pre-train an extractor on; the head learns "
                "on the random initial body (extractor: random says so)",
                dataset,
            )

    @property
    def on_device(self) -> bool:
        return True

    def attached_learner(self, attached: AttachedSpec) -> Learner:
        from fedsim.core.algorithms.attached import BridgedHeadLearner

        return BridgedHeadLearner(self.lr, self.passes, attached=attached)

    @property
    def batch_size(self) -> int:
        return 1

    @property
    def head_only(self) -> bool:
        return True

    def samples_processed(self, num_examples: int) -> int:
        return num_examples * self.passes

    def problems(self, scenario: Scenario) -> list[Problem]:
        spec = self.encoder(scenario.task.dataset)
        if spec is None:
            return []
        problems: list[Problem] = []
        unseen = spec.unseen
        if scenario.task.dataset != unseen:
            problems.append(
                (
                    "task.dataset",
                    f"tinyol's extractor is pre-trained on {spec.dataset}'s background classes; "
                    f"the devices learn the others, {unseen}",
                    f"set task.dataset: {unseen}",
                )
            )
        if scenario.task.model != spec.architecture:
            problems.append(
                (
                    "task.model",
                    f"the pre-trained extractor is the body of {spec.architecture} (for "
                    f"{spec.dataset}); the model must be that with its output layer",
                    f"set task.model: {spec.architecture}",
                )
            )
        return problems


def pretrain_config(spec: EncoderSpec, seed: int) -> PretrainConfig:
    """The cached pre-training ``spec`` stands for (prototype averaging's, for the same spec)."""
    return spec.config(seed)


def load_extractor(model: nn.Module, spec: EncoderSpec, seed: int) -> None:
    """Every tensor of ``model`` but its output layer from the pre-trained encoder (matched by
    name: the encoder is the same architecture with a 1-output head)."""
    import torch

    from fedsim.core.algorithms.pretrain import pretrain_encoder
    from fedsim.core.models import head_parameters

    config = pretrain_config(spec, seed)

    def show(step: int, loss: float) -> None:
        if step % 100 == 0 or step == config.episodes:
            log.info(
                "pre-training the extractor: %d/%d episodes, loss %.3f", step, spec.episodes, loss
            )

    trained = pretrain_encoder(config, show)
    head = head_parameters(model)
    state = model.state_dict()
    body = [name for name in state if name not in head]
    missing = [name for name in body if name not in trained]
    if missing:
        raise ValueError(f"the pre-trained {spec.architecture} has no {missing[0]}")
    model.load_state_dict(
        {**state, **{name: torch.from_numpy(trained[name].copy()) for name in body}}, strict=True
    )
