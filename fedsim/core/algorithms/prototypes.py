"""Federated reconnaissance by prototype averaging (Hendryx et al.; design §6.5).

Each round is a mission: every selected device embeds ``classes_per_mission`` new classes' samples
with the frozen, pre-trained encoder and sends per-class sums and counts; the server adds them up
(``prototype_sums``); a sample is classified as the nearest prototype among all classes reconnoitred
so far. No gradient step anywhere.

By default every class goes to one device once, so every merge rule gives the central prototypes;
``classes_recur: true`` deals the reference environment's missions instead (a class recurs on
several devices and rounds, with disjoint samples; ``devices.missions``), and ``merge: reference``
replaces the exact sum/count merge by the reference code's blend, to measure what it costs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, model_validator

from fedsim.core.algorithms.base import (
    Algorithm,
    DeviceUpdate,
    Learner,
    ModelAggregator,
    NonFiniteUpdateError,
    Problem,
    Received,
)
from fedsim.core.algorithms.prototype_sums import (
    ClassSums,
    PrototypeArrays,
    class_sums,
    decode_report,
    encode_report,
    report_bytes,
)
from fedsim.core.payload import Upload
from fedsim.core.reduce import Arrays
from fedsim.core.specs import Spec, Steps, at_most
from fedsim.core.state import DeviceState

if TYPE_CHECKING:
    from torch import nn

    from fedsim.core.algorithms.pretrain import PretrainConfig
    from fedsim.core.scenario import Scenario

__all__ = ["EncoderSpec", "Prototypes"]

log = logging.getLogger("fedsim.server")

# classes, support and query samples of one pre-training episode, all in one batch
_PerEpisode = Annotated[int, at_most(1_000, "one episode's samples are held in one batch")]


class EncoderSpec(Spec):
    """The frozen encoder, pre-trained episodically on the background classes of ``dataset``
    (``pretrain``; cached by this config and the seed): Conv-4 on the character sets' background
    alphabets (``kanjivg+omniglot``: KanjiVG's and every real Omniglot background character), an
    MLP on a seeded half of kws's or har's classes.

    Unset keys take the defaults measured for the dataset: for character sets ``PretrainConfig()``
    (wide 1-shot episodes with a cosine decay: 0.165 error on the official Omniglot runs,
    docs/reproductions/encoder.md); for kws and har, which have 3-6 background classes,
    ``POOLED_DEFAULT`` (5-way 5-shot, constant rate)."""

    @property
    def architecture(self) -> str:
        from fedsim.core.algorithms.pretrain import character_sets

        return "conv4" if character_sets(self.dataset) is not None else "mlp-100"

    @property
    def model(self) -> str:
        """The scenario's ``task.model``: the encoder with a prototype head."""
        return "conv4-proto" if self.architecture == "conv4" else "mlp-proto"

    @property
    def unseen(self) -> str:
        """The task dataset whose classes this encoder never saw."""
        return f"{self.dataset.split('+')[0]}-unseen"

    dataset: Literal["kanjivg+omniglot", "kanjivg", "omniglot", "kws", "har"] = Field(
        "kanjivg+omniglot", description="whose background classes the encoder is pre-trained on"
    )
    episodes: Steps = Field(1500, ge=1, description="pre-training episodes")
    n_way: _PerEpisode = Field(20, ge=2, description="classes per episode")
    k_shot: _PerEpisode = Field(1, ge=1, description="support samples per class per episode")
    q_queries: _PerEpisode = Field(5, ge=1, description="query samples per class per episode")
    lr: float = Field(1e-3, gt=0.0, description="pre-training learning rate (Adam)")
    lr_decay: float = Field(
        0.02, ge=0.0, le=1.0, description="last episode's rate as a fraction of lr (1: constant)"
    )
    rotations: bool = Field(
        True, description="character sets: rotated characters count as new classes"
    )

    @model_validator(mode="before")
    @classmethod
    def _dataset_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        from fedsim.core.algorithms.pretrain import (
            POOLED_DEFAULT,
            PretrainConfig,
            character_sets,
        )

        dataset = data.get("dataset", "kanjivg+omniglot")
        chars = isinstance(dataset, str) and character_sets(dataset) is not None
        defaults = PretrainConfig() if chars else POOLED_DEFAULT
        keys = ("episodes", "n_way", "k_shot", "q_queries", "lr", "lr_decay")
        return {**{k: getattr(defaults, k) for k in keys}, **data}

    def config(self, seed: int) -> PretrainConfig:
        """The cached pre-training this spec stands for (one for prototypes and TinyOL)."""
        from fedsim.core.algorithms.pretrain import PretrainConfig

        return PretrainConfig(
            dataset=self.dataset,
            architecture=self.architecture,
            episodes=self.episodes,
            n_way=self.n_way,
            k_shot=self.k_shot,
            q_queries=self.q_queries,
            lr=self.lr,
            rotations=self.rotations,
            seed=seed,
            lr_decay=self.lr_decay,
        )


class Prototypes(Algorithm):
    encoder: EncoderSpec = Field(
        EncoderSpec(), description="the frozen, episodically pre-trained encoder"
    )
    classes_per_mission: Annotated[
        int, at_most(10_000, "a mission's classes are embedded and held together")
    ] = Field(5, ge=1, description="new classes per device per mission")
    samples_per_class: (
        Annotated[int, at_most(1_000_000, "a class's samples are embedded one by one")] | None
    ) = Field(None, ge=1, description="labelled samples per new class (default: all it has)")
    classes_recur: bool = Field(
        False,
        description="the reference environment's missions: each device draws its classes at "
        "random among those with samples left, so classes recur across devices and rounds",
    )
    merge: Literal["exact", "reference"] = Field(
        "exact",
        description="exact: sums and counts added (the central prototypes); reference: the "
        "reference code's blend, which under-weights new samples of classes the server knew",
    )

    def learner(self) -> Learner:
        return EmbedOnly()

    def device_round(
        self,
        model: nn.Module,
        x: NDArray[np.float32],
        y: NDArray[Any],
        global_arrays: Arrays,
        payload_dtype: str,
    ) -> DeviceUpdate:
        """A mission: embed the new samples with the frozen encoder and report per class their
        sum and count (as the server will decode it: checked, in the wire format)."""
        import torch

        from fedsim.core.models import encoder_of

        encoder = encoder_of(model)
        encoder.eval()
        num_classes, dim = global_arrays[-2].shape
        with torch.no_grad():
            inputs = torch.from_numpy(x)
            parts = [encoder(inputs[i : i + 256]).numpy() for i in range(0, len(x), 256)]
        embeddings = np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)
        if not np.isfinite(embeddings).all():
            raise NonFiniteUpdateError(
                "non-finite embeddings: the encoder holds NaN or inf; re-run fedsim pretrain"
            )
        wire = encode_report(class_sums("", embeddings, y), payload_dtype)
        report = decode_report(wire, "", num_classes, dim)
        return DeviceUpdate(global_arrays, len(y), 0.0, (False,) * len(global_arrays), wire, report)

    def pretrained(self, model: nn.Module, seed: int) -> None:
        """The pre-trained encoder (``fedsim pretrain``; trained now if not cached) goes into the
        model; the prototype head stays empty."""
        from fedsim.core.algorithms.pretrain import pretrain_encoder
        from fedsim.core.models import get_arrays, set_arrays

        e = self.encoder
        config = e.config(seed)

        def show(step: int, loss: float) -> None:
            if step % 100 == 0 or step == config.episodes:
                log.info(
                    "pre-training the encoder: %d/%d episodes, loss %.3f", step, e.episodes, loss
                )

        trained = list(pretrain_encoder(config, show).values())
        arrays = get_arrays(model)
        set_arrays(model, [*trained[:-2], *arrays[-2:]])  # the linear head ↔ the prototype buffers

    def decode_update(
        self,
        wire: Mapping[str, NDArray[Any]],
        received: Received,
        global_arrays: Arrays,
        upload: Upload,
    ) -> ClassSums:
        """A mission's report, checked (``PrototypeError``, a ``ValueError``, refuses it whole)."""
        return decode_report(wire, received.mission, *global_arrays[-2].shape)

    def aggregator(self) -> ModelAggregator:
        return PrototypeArrays(self.merge)  # per-class sums and counts added up (or blended)

    @property
    def batch_size(self) -> int:
        return 1  # embeds one sample at a time: inference memory only

    @property
    def trains(self) -> bool:
        return False

    def samples_processed(self, num_examples: int) -> int:
        return num_examples  # forward passes only

    def sent_down(
        self, head: tuple[bool, ...], frozen: tuple[bool, ...]
    ) -> tuple[bool, ...] | None:
        """The encoder is in flash; the prototypes (the last two tensors) travel."""
        return tuple(i >= len(head) - 2 for i in range(len(head)))

    def mission_bytes(self, classes: int, shapes: list[tuple[int, ...]], itemsize: int) -> int:
        return report_bytes(classes, int(shapes[-2][1]), itemsize)

    def seen_classes(self, global_arrays: Arrays) -> NDArray[np.bool_]:
        """Classes some device has reported: the prototype head's counts (the last tensor)."""
        seen: NDArray[np.bool_] = global_arrays[-1] > 0
        return seen

    def missions(self) -> tuple[int, int | None]:
        return (self.classes_per_mission, self.samples_per_class)

    def recurring_missions(self) -> bool:
        return self.classes_recur

    def problems(self, scenario: Scenario) -> list[Problem]:
        problems: list[Problem] = []
        unseen = self.encoder.unseen
        if scenario.task.dataset != unseen:
            problems.append(
                (
                    "task.dataset",
                    f"prototype averaging learns the classes its encoder never saw: with "
                    f"encoder.dataset {self.encoder.dataset} that is {unseen}",
                    f"set task.dataset: {unseen}",
                )
            )
        if scenario.task.model != self.encoder.model:
            problems.append(
                (
                    "task.model",
                    f"prototype averaging needs the encoder's architecture with a prototype head: "
                    f"for encoder.dataset {self.encoder.dataset}, {self.encoder.model}",
                    f"set task.model: {self.encoder.model}",
                )
            )
        if self.classes_recur and self.samples_per_class is None:
            problems.append(
                (
                    "algorithm.samples_per_class",
                    "with classes_recur a mission takes some of a class's samples and leaves the "
                    "rest for later missions; without a number it would take them all at once",
                    "set samples_per_class (e.g. 5)",
                )
            )
        if self.classes_recur and scenario.fleet.partition.kind == "natural":
            problems.append(
                (
                    "algorithm.classes_recur",
                    "recurring missions draw from the pooled samples; a natural partition keeps "
                    "each device on its own samples",
                    "drop classes_recur, or use a pooled partition (e.g. iid)",
                )
            )
        if scenario.topology is not None and scenario.topology.local_rounds > 1:
            problems.append(
                (
                    "topology.local_rounds",
                    "prototype averaging adds every mission's sums once; a gateway has nothing "
                    "to re-aggregate between local rounds",
                    "set local_rounds: 1",
                )
            )
        return problems


class EmbedOnly:
    """Prototype averaging's device takes no training step (``Prototypes.device_round`` embeds
    and reports); this only says so if something asks it to train."""

    stateful: ClassVar[bool] = False

    def train(
        self,
        model: nn.Module,
        x: NDArray[np.float32],
        y: NDArray[Any],
        seed: int,
        state: DeviceState | None = None,
    ) -> float:
        raise TypeError("prototype averaging takes no gradient step; devices report class sums")
