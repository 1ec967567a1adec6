"""Algorithm specs: what each algorithm kind takes in a scenario and tells the rest of fedsim
(samples processed, the server's step size, what is uploaded, what devices train).

Split from ``fedsim.core.scenario`` (which re-exports them) because the algorithm families grew:
FedAvg/FedProx, the online meta-learners (TinyOL, TinyReptile, TinyMetaFed; DESIGN.md §6.1-6.4)
and prototype averaging (§6.5).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field, model_validator

from fedsim.core.specs import BatchSize, Epochs, Steps, at_most
from fedsim.core.specs import Spec as _Spec

__all__ = [
    "AlgorithmSpec",
    "BackboneSpec",
    "EncoderSpec",
    "FedAvgSpec",
    "FedInsSpec",
    "FedProxSpec",
    "PrototypesSpec",
    "TinyMetaFedSpec",
    "TinyOLSpec",
    "TinyReptileSpec",
]


# classes, support and query samples of one pre-training episode, all in one batch
_PerEpisode = Annotated[int, at_most(1_000, "one episode's samples are held in one batch")]


class _Algorithm(_Spec):
    """What every algorithm tells the rest of fedsim (defaults: FedAvg's)."""

    def update_weight(self, num_examples: int) -> int:
        """A device's weight in the server's mean: its local samples (FedAvg)."""
        return num_examples

    @property
    def uniform_weights(self) -> bool:
        """True: the server's mean weighs every device alike, whatever its samples."""
        return False

    def server_lr(self, round_: int, rounds: int) -> float:
        """ε of θ ← θ + ε·(mean update − θ); 1 = take the mean (FedAvg)."""
        return 1.0

    @property
    def upload_fraction(self) -> float:
        """Fraction of the global parameters' changes a device uploads (1: the dense model)."""
        return 1.0

    @property
    def local_head(self) -> bool:
        """True: the head stays on the device, reconstructed each round, never uploaded."""
        return False

    @property
    def head_only(self) -> bool:
        """True: devices only ever train the last layer (the rest is a frozen extractor)."""
        return False

    @property
    def trains(self) -> bool:
        """False: devices only run the model forward (their memory must hold inference only)."""
        return True

    def frozen(self, name: str) -> bool:
        """True: the model tensor ``name`` never trains nor travels (a frozen backbone)."""
        return False


class _LocalSgd(_Algorithm):
    lr: float = Field(0.1, gt=0.0)
    local_epochs: Epochs = Field(1, ge=1)
    batch_size: BatchSize = Field(16, ge=1)

    def samples_processed(self, num_examples: int) -> int:
        """Samples one device's round runs through training (forward and backward)."""
        return num_examples * self.local_epochs


class TinyOLSpec(_Algorithm):
    """Federated TinyOL (Ren et al.; DESIGN.md §6.1): the model minus its last layer is a frozen
    feature extractor (in flash); each device trains only the output layer, one SGD step per
    arriving sample (batch 1), ``passes`` times over its stream, keeping nothing but the layer,
    with ``clients/tinyol.py``'s numpy ``OnlineHead`` (the firmware's reference). The server
    averages the layers (FedAvg of heads)."""

    kind: Literal["tinyol"]
    lr: float = Field(0.01, gt=0.0, description="per-sample SGD learning rate")
    passes: Epochs = Field(1, ge=1, description="passes over the device's stream per round")

    @property
    def batch_size(self) -> int:
        return 1

    @property
    def state_copies(self) -> int:
        return 0

    @property
    def head_only(self) -> bool:
        return True

    def samples_processed(self, num_examples: int) -> int:
        return num_examples * self.passes


class EncoderSpec(_Spec):
    """The frozen encoder of prototype averaging, pre-trained episodically on the background
    classes of ``dataset`` (``fedsim.core.pretrain``; cached by this config and the seed): Conv-4
    on the character sets' background alphabets, an MLP on a seeded half of kws's or har's
    classes."""

    @property
    def architecture(self) -> str:
        return "conv4" if self.dataset in ("kanjivg", "omniglot") else "mlp-100"

    @property
    def model(self) -> str:
        """The scenario's ``task.model``: the encoder with a prototype head."""
        return "conv4-proto" if self.architecture == "conv4" else "mlp-proto"

    dataset: Literal["kanjivg", "omniglot", "kws", "har"] = "kanjivg"
    episodes: Steps = Field(2000, ge=1)
    n_way: _PerEpisode = Field(5, ge=2)
    k_shot: _PerEpisode = Field(5, ge=1)
    q_queries: _PerEpisode = Field(5, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    rotations: bool = True


class PrototypesSpec(_Algorithm):
    """Federated reconnaissance (Hendryx et al.; DESIGN.md §6.5): each round is a mission; every
    selected device embeds ``classes_per_mission`` new classes' samples with the frozen encoder
    and sends per-class sums and counts; the server adds them up; a sample is classified as the
    nearest prototype among all classes reconnoitred so far. No gradient step anywhere."""

    kind: Literal["prototypes"]
    encoder: EncoderSpec = EncoderSpec()
    classes_per_mission: Annotated[
        int, at_most(10_000, "a mission's classes are embedded and held together")
    ] = Field(5, ge=1, description="new classes per device per mission")
    samples_per_class: (
        Annotated[int, at_most(1_000_000, "a class's samples are embedded one by one")] | None
    ) = Field(None, ge=1, description="labelled samples per new class (default: all it has)")

    @property
    def batch_size(self) -> int:
        return 1  # embeds one sample at a time: inference memory only

    @property
    def state_copies(self) -> int:
        return 0

    @property
    def trains(self) -> bool:
        return False

    def samples_processed(self, num_examples: int) -> int:
        return num_examples  # forward passes only


class BackboneSpec(_Spec):
    """FedIns's frozen backbone: the SSF ViT pre-trained supervised on ``dataset``
    (``fedsim.core.backbone``; cached by this config and the seed)."""

    dataset: Literal["fashion-mnist", "mnist-5k"] = "fashion-mnist"
    steps: Steps = Field(3000, ge=1)
    # the ViT's parameters grow as depth × dim²: 1024 × 1024 × 64 blocks is ~1 GB of weights
    dim: Annotated[int, at_most(1_024, "the ViT's weights grow as dim²")] = Field(64, ge=8)
    depth: Annotated[int, at_most(64, "every block's weights are held in memory")] = Field(4, ge=1)


class FedInsSpec(_LocalSgd):
    """FedIns (Feng et al.; DESIGN.md §6.6): a frozen pre-trained ViT; each device trains a pool
    of ``entries`` SSF sets with keys and heads, each instance using the mean of its ``top_n``
    entries by key similarity; loss (1 − λ)·CE + λ·(1 − Σ cos(q, k)), λ = ``key_weight``. The
    server averages every pool tensor element-wise (``weighting``). Baselines in the same family:
    ``entries: 1, top_n: 1, key_weight: 0`` is federated SSF (one SSF and head per client,
    FedAvg'd); with ``train: head`` only the head trains (head-only FedAvg); with ``train: all``
    the backbone trains too (full-model FedAvg, the communication reference)."""

    kind: Literal["fedins"]
    lr: float = Field(0.05, gt=0.0)
    backbone: BackboneSpec = BackboneSpec()
    entries: Annotated[int, at_most(1_000, "every entry trains and travels each round")] = Field(
        25, ge=1, description="M: SSF sets (with key and head) in the pool"
    )
    top_n: int = Field(3, ge=1, description="N: entries averaged per instance")
    key_weight: float = Field(0.1, ge=0.0, le=1.0, description="λ of the key-matching loss")
    weighting: Literal["uniform", "samples"] = Field(
        "uniform", description="server mean over clients: uniform (reference code) or by samples"
    )
    train: Literal["pool", "head", "all"] = Field(
        "pool",
        description="what trains and travels: the pool (FedIns), only the heads (head-only "
        "FedAvg), or everything, backbone included (full-model FedAvg, the reference)",
    )

    @model_validator(mode="after")
    def _top_within_pool(self) -> FedInsSpec:
        if self.top_n > self.entries:
            raise ValueError(f"top_n ({self.top_n}) cannot exceed entries ({self.entries})")
        return self

    @property
    def state_copies(self) -> int:
        return 0

    def frozen(self, name: str) -> bool:
        if name.startswith("backbone.head."):
            return True  # the pre-training head: FedIns classifies with the pool's heads
        if self.train == "all":
            return False
        if self.train == "head":
            return not name.startswith("head_")
        return name.startswith("backbone.")

    @property
    def uniform_weights(self) -> bool:
        return self.weighting == "uniform"


class FedAvgSpec(_LocalSgd):
    """FedAvg (McMahan et al.). With ``batch_size`` ≥ a device's samples and one epoch, each device
    takes one full-batch gradient step per round: FedSGD, the jointly trained "average model"."""

    kind: Literal["fedavg"]

    @property
    def state_copies(self) -> int:
        """Copies of the trainable parameters training keeps besides them (optimizer state)."""
        return 0


class FedProxSpec(_LocalSgd):
    kind: Literal["fedprox"]
    mu: float = Field(0.01, ge=0.0, description="weight of the proximal term mu/2·||w - w_t||²")

    @property
    def state_copies(self) -> int:
        return 1 if self.mu > 0 else 0  # the anchor w_t


class _Reptile(_Algorithm):
    """Online steps on the device, a Reptile step on the server (DESIGN.md §6.2).

    A device starts from θ and takes ``steps`` SGD steps of ``batch_size`` samples from its stream
    (batch 1 = online: each sample seen once, then dropped); the server moves θ a fraction ε_t of
    the way to the mean of what devices return: θ ← θ + ε_t·mean(φᵢ − θ). ε_t goes from
    ``epsilon`` to ``epsilon_end`` over the run (``schedule``).
    """

    lr: float = Field(0.02, gt=0.0, description="device (inner) SGD learning rate")
    batch_size: BatchSize = Field(1, ge=1, description="samples per online step (1: one at a time)")
    steps: Steps = Field(5, ge=1, description="online SGD steps per device round")
    epsilon: float = Field(1.0, gt=0.0, le=1.0, description="server step size ε at round 1")
    epsilon_end: float = Field(0.0, ge=0.0, le=1.0, description="ε approached at the end")
    schedule: Literal["linear", "cosine", "constant"] = "linear"

    def samples_processed(self, num_examples: int) -> int:
        return self.steps * self.batch_size

    def update_weight(self, num_examples: int) -> int:
        """Samples processed, the same for every device: Reptile's mean over devices is uniform."""
        return self.samples_processed(num_examples)

    def server_lr(self, round_: int, rounds: int) -> float:
        if self.schedule == "constant":
            return self.epsilon
        done = (round_ - 1) / rounds  # 0 at the first round, as in Reptile's reference code
        if self.schedule == "cosine":
            done = 0.5 * (1.0 - math.cos(math.pi * done))
        return (1.0 - done) * self.epsilon + done * self.epsilon_end


class TinyReptileSpec(_Reptile):
    """TinyReptile (Ren et al.): federated Reptile with online learning. ``clients_per_round: 1``
    is the paper's serial processing; ``schedule: constant`` with ``epsilon: 1`` and one device
    per round is sequential fine-tuning (θ becomes each device's φ in turn)."""

    kind: Literal["tinyreptile"]

    @property
    def state_copies(self) -> int:
        return 0  # φ replaces θ in place; the device sends φ


class TinyMetaFedSpec(_Reptile):
    """TinyMetaFed: TinyReptile with partial local reconstruction and top-P% upload (§6.3).

    ``local: head``: the last layer is local; each round the device first reconstructs it on its
    support samples (``support_steps``, the rest frozen), then updates the global part on its query
    samples (``steps``, the head frozen), and uploads only the ``top_p`` largest changes of the
    global part as (index, value) pairs. The server's Reptile step sees the sparse changes.
    """

    kind: Literal["tinymetafed"]
    local: Literal["head", "none"] = Field("head", description="parameters kept on the device")
    support_steps: Steps = Field(2, ge=0, description="online steps reconstructing the local part")
    top_p: float = Field(
        0.25, gt=0.0, le=1.0, description="fraction of global changes uploaded (largest |Δ|)"
    )

    @model_validator(mode="after")
    def _head_is_reconstructed(self) -> TinyMetaFedSpec:
        if self.local == "head" and self.support_steps < 1:
            raise ValueError(
                "with local: head the head is only ever trained by the support steps; set "
                "support_steps to at least 1 (or local: none)"
            )
        return self

    @property
    def upload_fraction(self) -> float:
        return self.top_p

    @property
    def local_head(self) -> bool:
        return self.local == "head"

    def samples_processed(self, num_examples: int) -> int:
        support = self.support_steps if self.local_head else 0
        return (support + self.steps) * self.batch_size

    @property
    def state_copies(self) -> int:
        return 1  # θ_g as received, to compute the change to upload


AlgorithmSpec = Annotated[
    FedAvgSpec
    | FedProxSpec
    | TinyReptileSpec
    | TinyMetaFedSpec
    | TinyOLSpec
    | PrototypesSpec
    | FedInsSpec,
    Field(discriminator="kind"),
]
