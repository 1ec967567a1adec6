"""The scenario schema: frozen pydantic models, unknown keys forbidden, unions tagged by ``kind``.

A scenario names the seed, the task (dataset + model), the fleet (device groups by profile and
count, data partitioning, injected faults), the algorithm and its typed parameters, the number of
rounds, how many devices train per round, evaluation, execution and output. Loading a YAML file
(``extends``, error locations) lives in ``fedsim.core.scenario_load``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fedsim.core.data import DATASETS
from fedsim.core.models import MODELS
from fedsim.core.payload import Upload

__all__ = [
    "AdaptSpec",
    "AlgorithmSpec",
    "AlwaysOn",
    "AvailabilitySpec",
    "DeviceGroup",
    "DirichletPartition",
    "EncoderSpec",
    "EvaluationSpec",
    "ExecutionSpec",
    "FaultSpec",
    "FedAvgSpec",
    "FedProxSpec",
    "FleetSpec",
    "IidPartition",
    "MarkovAvailability",
    "NaturalPartition",
    "OutputSpec",
    "PartitionSpec",
    "PrototypesSpec",
    "RegistrySpec",
    "Scenario",
    "ShardPartition",
    "TaskSpec",
    "TinyMetaFedSpec",
    "TinyOLSpec",
    "TinyReptileSpec",
    "TraceAvailability",
    "choose_engine",
]


class _Spec(BaseModel):
    # strict: a YAML "10" is not silently an int; extra="forbid": a typo is an error, not a no-op.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class TaskSpec(_Spec):
    dataset: str = "digits"
    model: str = "mlp"

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        return DATASETS.check(name)

    @field_validator("model")
    @classmethod
    def _known_model(cls, name: str) -> str:
        return MODELS.check(name)


class FaultSpec(_Spec):
    """Injected faults, drawn per (seed, round, device) so runs stay reproducible."""

    crash_prob: float = Field(0.0, ge=0.0, le=1.0)


class AlwaysOn(_Spec):
    kind: Literal["always-on"] = "always-on"


class MarkovAvailability(_Spec):
    """On for Exp(mean_on_s), off for Exp(mean_off_s), alternating; seeded per device."""

    kind: Literal["markov"]
    mean_on_s: float = Field(gt=0.0, description="mean online spell (1 / on→off rate)")
    mean_off_s: float = Field(gt=0.0, description="mean offline spell (1 / off→on rate)")


class TraceAvailability(_Spec):
    """Online intervals from a CSV ``device,start,end`` (fleet device ids, simulated seconds)."""

    kind: Literal["trace"]
    file: str = Field(min_length=1, description="path relative to the scenario file")


AvailabilitySpec = Annotated[
    AlwaysOn | MarkovAvailability | TraceAvailability, Field(discriminator="kind")
]


class DeviceGroup(_Spec):
    """Devices of one profile (``profile`` + ``count``), or ``count`` devices drawn (seeded) from
    those a registry query returns (``query`` + ``bind``), e.g. all that can train a model."""

    profile: str | None = Field(None, description="device profile name in the registry")
    query: str | None = Field(
        None, description="a named query (ontology/queries) or .rq file returning ?name ?profile"
    )
    bind: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="the query's variables, e.g. {modelName: mlp.kws}"
    )
    count: int = Field(ge=1)
    link: str | None = Field(
        None, description="which of the profile's links it uses (default: wifi, ethernet, ...)"
    )
    availability: AvailabilitySpec = AlwaysOn()
    faults: FaultSpec = FaultSpec()

    @model_validator(mode="after")
    def _profile_or_query(self) -> DeviceGroup:
        if (self.profile is None) == (self.query is None):
            raise ValueError("give either profile (a device class) or query (registry devices)")
        if self.bind and self.query is None:
            raise ValueError("bind only applies to a query")
        return self


class IidPartition(_Spec):
    kind: Literal["iid"] = "iid"


class DirichletPartition(_Spec):
    kind: Literal["dirichlet"]
    alpha: float = Field(gt=0.0, description="concentration; small = very non-IID")
    min_partition_size: int = Field(2, ge=0)


class ShardPartition(_Spec):
    """Sort by label, cut into shards, deal each device ``shards_per_device`` (McMahan et al.)."""

    kind: Literal["shards"]
    shards_per_device: int = Field(2, ge=1)


class NaturalPartition(_Spec):
    """One natural group per device (writer, speaker, subject, room): real non-IID clients."""

    kind: Literal["natural"]


PartitionSpec = Annotated[
    IidPartition | DirichletPartition | ShardPartition | NaturalPartition,
    Field(discriminator="kind"),
]


class FleetSpec(_Spec):
    groups: list[DeviceGroup] = Field(min_length=1)
    partition: PartitionSpec = IidPartition()
    samples_per_device: int | None = Field(
        None, ge=1, description="generated datasets only: local samples per device (default 32)"
    )
    memory_policy: Literal["skip", "head-only"] = Field(
        "skip", description="a device whose SRAM cannot hold training: sit out, or train the head"
    )
    payload_dtype: Literal["float32", "float16"] = Field(
        "float32", description="number format of the model sent down and the update sent up"
    )
    cost_model: str = Field("datasheet", description="datasheet (catalog figures) or fake")

    @property
    def size(self) -> int:
        return sum(group.count for group in self.groups)


class _Algorithm(_Spec):
    """What every algorithm tells the rest of fedsim (defaults: FedAvg's)."""

    def update_weight(self, num_examples: int) -> int:
        """A device's weight in the server's mean: its local samples (FedAvg)."""
        return num_examples

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


class _LocalSgd(_Algorithm):
    lr: float = Field(0.1, gt=0.0)
    local_epochs: int = Field(1, ge=1)
    batch_size: int = Field(16, ge=1)

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
    passes: int = Field(1, ge=1, description="passes over the device's stream per round")

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
    episodes: int = Field(2000, ge=1)
    n_way: int = Field(5, ge=2)
    k_shot: int = Field(5, ge=1)
    q_queries: int = Field(5, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    rotations: bool = True


class PrototypesSpec(_Algorithm):
    """Federated reconnaissance (Hendryx et al.; DESIGN.md §6.5): each round is a mission; every
    selected device embeds ``classes_per_mission`` new classes' samples with the frozen encoder
    and sends per-class sums and counts; the server adds them up; a sample is classified as the
    nearest prototype among all classes reconnoitred so far. No gradient step anywhere."""

    kind: Literal["prototypes"]
    encoder: EncoderSpec = EncoderSpec()
    classes_per_mission: int = Field(5, ge=1, description="new classes per device per mission")
    samples_per_class: int | None = Field(
        None, ge=1, description="labelled samples per new class (default: all it has)"
    )

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
    batch_size: int = Field(1, ge=1, description="samples per online step (1: one at a time)")
    steps: int = Field(5, ge=1, description="online SGD steps per device round")
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
    support_steps: int = Field(2, ge=0, description="online steps reconstructing the local part")
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
    FedAvgSpec | FedProxSpec | TinyReptileSpec | TinyMetaFedSpec | TinyOLSpec | PrototypesSpec,
    Field(discriminator="kind"),
]


class AdaptSpec(_Spec):
    """Evaluation on held-out devices (DESIGN.md §6.2): each held-out natural group of the test
    split (a sine task, a speaker, a writer, a subject, a room) is a device never seen in training;
    it starts from θ, takes ``steps`` SGD steps on ``support`` of its samples, and is scored on the
    rest (``query: rest``) or on all of them (``all``, the Reptile sine reference: the 50-point
    grid). The same support samples every evaluation, so rounds compare."""

    support: int = Field(10, ge=1, description="K: labelled samples a held-out device adapts on")
    head_steps: int = Field(
        0, ge=0, description="first, steps on the head alone (TinyMetaFed's reconstruction)"
    )
    steps: int = Field(32, ge=0, description="then SGD steps on all parameters")
    lr: float = Field(0.02, gt=0.0)
    batch_size: int | None = Field(None, ge=1, description="samples per step (default: all K)")
    query: Literal["rest", "all"] = "rest"
    max_devices: int | None = Field(None, ge=2, description="evaluate this many held-out devices")


class EvaluationSpec(_Spec):
    every: int = Field(1, ge=1, description="evaluate the global model every N rounds (and last)")
    adapt: AdaptSpec | None = Field(
        None, description="also score θ after adaptation on held-out devices (meta-learning)"
    )


class ExecutionSpec(_Spec):
    """How the fleet is executed (``DESIGN.md`` §3.1); never changes the results.

    ``mode``: ``cohort`` runs a share of each round's devices per Flower node (one node per Ray
    actor) and replies with partial aggregates; ``per-device`` runs one Flower node per device
    (the faithful mode, and the one for real devices). ``engine: auto`` picks ``inline`` for runs
    too small to pay back Ray's start-up (~10 s here) and ``ray`` otherwise (``fedsim.runner``).
    ``vectorize`` (cohort mode) trains devices
    that share a model together with ``torch.func``; off, they train one by one, bit-identical to
    per-device mode.
    """

    engine: Literal["auto", "ray", "inline"] = "auto"
    mode: Literal["cohort", "per-device"] = "cohort"
    vectorize: bool = True
    actors: int = Field(2, ge=1, le=64, description="Ray actors (one CPU each)")
    round_timeout_s: float = Field(600.0, gt=0.0)


class RegistrySpec(_Spec):
    """The registry a run reads devices from and writes its participation to (DESIGN.md §8)."""

    store: Literal["memory", "oxigraph"] = "memory"
    db: str | None = Field(
        None, description="oxigraph only: a persistent store folder (relative to the scenario)"
    )
    data: list[str] = Field(
        default_factory=list, description="Turtle files of fleet devices (relative paths)"
    )
    write_back: bool = Field(True, description="record who took part in which round, and how")


class OutputSpec(_Spec):
    dir: str = "results"


class Scenario(_Spec):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    seed: int = 0
    task: TaskSpec = TaskSpec()
    fleet: FleetSpec
    algorithm: AlgorithmSpec
    rounds: int = Field(ge=1)
    clients_per_round: int | None = Field(None, ge=1, description="default: the whole fleet")
    deadline_s: float | None = Field(
        None, gt=0.0, description="simulated seconds a round waits; later devices are cut"
    )
    evaluation: EvaluationSpec = EvaluationSpec()
    execution: ExecutionSpec = ExecutionSpec()
    registry: RegistrySpec | None = None
    output: OutputSpec = OutputSpec()

    @property
    def cohort_size(self) -> int:
        return self.clients_per_round or self.fleet.size

    @property
    def upload(self) -> Upload:
        """How devices' updates travel up (number format; dense or top-P sparse)."""
        return Upload(self.fleet.payload_dtype, self.algorithm.upload_fraction)

    def digest(self) -> str:
        """SHA-256 of the validated scenario (defaults included), stable across key order."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def consistency_problems(self) -> list[tuple[str, str, str]]:
        """Cross-field problems as (dotted path, what, fix)."""
        problems = []
        if self.clients_per_round is not None and self.clients_per_round > self.fleet.size:
            problems.append(
                (
                    "clients_per_round",
                    f"{self.clients_per_round} devices per round, but the fleet has only "
                    f"{self.fleet.size}",
                    f"set it to at most {self.fleet.size} or add devices to fleet.groups",
                )
            )
        if self.algorithm.local_head and self.fleet.memory_policy == "head-only":
            problems.append(
                (
                    "fleet.memory_policy",
                    f"{self.algorithm.kind} keeps the head on the device, so a device that can "
                    "train only its head would upload nothing",
                    "use memory_policy: skip, or algorithm.local: none",
                )
            )
        if isinstance(self.algorithm, PrototypesSpec):
            unseen = f"{self.algorithm.encoder.dataset}-unseen"
            if self.task.dataset != unseen:
                problems.append(
                    (
                        "task.dataset",
                        f"prototype averaging learns the classes its encoder never saw: with "
                        f"encoder.dataset {self.algorithm.encoder.dataset} that is {unseen}",
                        f"set task.dataset: {unseen}",
                    )
                )
            model = self.algorithm.encoder.model
            if self.task.model != model:
                problems.append(
                    (
                        "task.model",
                        f"prototype averaging needs the encoder's architecture with a prototype "
                        f"head: for encoder.dataset {self.algorithm.encoder.dataset}, {model}",
                        f"set task.model: {model}",
                    )
                )
        data = DATASETS.get(self.task.dataset)
        if self.evaluation.adapt is not None and data.natural_groups is None:
            problems.append(
                (
                    "evaluation.adapt",
                    f"'{self.task.dataset}' has no natural groups (writers, speakers, tasks...), "
                    "so there are no held-out devices to adapt",
                    "remove evaluation.adapt or use a dataset with natural groups "
                    "(fedsim data list)",
                )
            )
        return problems


# `engine: auto` uses Ray from this many device-rounds on (cohort_size × rounds), with ≥ 2 cores:
# below it, Ray's fixed ~10 s start-up and shutdown cost more than a second core saves
# (benchmarks/cohort.py: 1000 × 2 takes 7 s inline and 17 s on Ray with 2 actors).
AUTO_RAY_MIN_DEVICE_ROUNDS = 20_000


def choose_engine(
    scenario: Scenario, engine: Literal["auto", "ray", "inline"] | None = None
) -> Literal["ray", "inline"]:
    """The engine a run uses: the one asked for, or for ``auto`` the faster one for its size."""
    engine = engine or scenario.execution.engine
    if engine != "auto":
        return engine
    work = scenario.cohort_size * scenario.rounds
    return "ray" if (os.cpu_count() or 1) >= 2 and work >= AUTO_RAY_MIN_DEVICE_ROUNDS else "inline"
