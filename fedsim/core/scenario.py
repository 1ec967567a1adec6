"""The scenario schema: frozen pydantic models, unknown keys forbidden, unions tagged by ``kind``.

A scenario names the seed, the task (dataset + model), the fleet (device groups by profile and
count, data partitioning, injected faults), the algorithm and its typed parameters, the number of
rounds, how many devices train per round, evaluation, execution and output. Loading a YAML file
(``extends``, error locations) lives in ``fedsim.core.scenario_load``.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Annotated, Literal

from pydantic import (
    Field,
    SerializeAsAny,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from fedsim.core.algorithms import Algorithm, algorithm_class
from fedsim.core.data import DATASETS, dataset_source
from fedsim.core.errors import FedsimError, clip, shown
from fedsim.core.fleet_spec import (
    AlwaysOn,
    AttachedSpec,
    AvailabilitySpec,
    DeviceGroup,
    DirichletPartition,
    FaultSpec,
    FleetSpec,
    GatewayDevices,
    GatewaySpec,
    IidPartition,
    MarkovAvailability,
    NaturalPartition,
    Outages,
    OutageSpell,
    PartitionSpec,
    ShardPartition,
    TopologySpec,
    TraceAvailability,
    topology_problems,
)
from fedsim.core.models import MODELS, model_builder
from fedsim.core.payload import Upload
from fedsim.core.specs import (
    MAX_DEVICES,
    BatchSize,
    DeviceCount,
    FileName,
    PathText,
    Rounds,
    Seed,
    Steps,
    at_most,
)
from fedsim.core.specs import Spec as _Spec

__all__ = [
    "AdaptSpec",
    "Algorithm",
    "AlwaysOn",
    "AttachedSpec",
    "AvailabilitySpec",
    "DeviceGroup",
    "DirichletPartition",
    "EvaluationSpec",
    "ExecutionSpec",
    "FaultSpec",
    "FleetSpec",
    "GatewayDevices",
    "GatewaySpec",
    "IidPartition",
    "MarkovAvailability",
    "NaturalPartition",
    "OutageSpell",
    "Outages",
    "OutputSpec",
    "PartitionSpec",
    "RegistrySpec",
    "Scenario",
    "ShardPartition",
    "TaskSpec",
    "TopologySpec",
    "TraceAvailability",
    "choose_engine",
]


class TaskSpec(_Spec):
    dataset: str = Field(
        "digits",
        description="the data the fleet learns: a built-in (fedsim data list), an installed "
        "plugin, or package.module:name",
    )
    model: str = Field(
        "mlp", description="the model devices train: a built-in name or package.module:name"
    )

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        return DATASETS.check(name)

    @field_validator("model")
    @classmethod
    def _known_model(cls, name: str) -> str:
        return MODELS.check(name)


class AdaptSpec(_Spec):
    """Evaluation on held-out devices (design §6.2): each held-out natural group of the test
    split (a sine task, a speaker, a writer, a subject, a room) is a device never seen in training;
    it starts from θ, takes ``steps`` SGD steps on ``support`` of its samples, and is scored on the
    rest (``query: rest``) or on all of them (``all``, the Reptile sine reference: the 50-point
    grid). The same support samples every evaluation, so rounds compare.

    ``online: true`` is how TinyReptile and TinyMetaFed evaluate: the device's K support samples
    arrive one at a time (classes taking turns) and each gets one SGD step of batch 1, once, then
    is dropped (the first ``head_steps`` of them train the head alone); ``steps`` and
    ``batch_size`` do not apply."""

    support: Annotated[int, at_most(100_000, "a device adapts on them all at once")] = Field(
        10, ge=1, description="K: labelled samples a held-out device adapts on"
    )
    head_steps: Steps = Field(
        0, ge=0, description="first, steps on the head alone (TinyMetaFed's reconstruction)"
    )
    steps: Steps = Field(32, ge=0, description="then SGD steps on all parameters")
    lr: float = Field(0.02, gt=0.0, description="the adaptation's SGD learning rate")
    batch_size: BatchSize | None = Field(
        None, ge=1, description="samples per step (default: all K)"
    )
    online: bool = Field(
        False, description="one batch-1 step per support sample, each once, in stream order"
    )
    query: Literal["rest", "all"] = Field(
        "rest", description="score on the samples after the support (rest) or on all of them"
    )
    max_devices: DeviceCount | None = Field(
        None, ge=2, description="evaluate this many held-out devices"
    )

    @model_validator(mode="after")
    def _online_head_fits(self) -> AdaptSpec:
        if self.online and self.head_steps > self.support:
            raise ValueError(
                f"online adaptation steps once per support sample: head_steps ({self.head_steps}) "
                f"cannot exceed support ({self.support}); lower head_steps"
            )
        return self


class EvaluationSpec(_Spec):
    every: Rounds = Field(
        1, ge=1, description="evaluate the global model every N rounds (and last)"
    )
    adapt: AdaptSpec | None = Field(
        None, description="also score θ after adaptation on held-out devices (meta-learning)"
    )


class ExecutionSpec(_Spec):
    """How the fleet is executed (design §3.1); never changes the results.

    ``mode``: ``cohort`` runs a share of each round's devices per Flower node (one node per Ray
    actor) and replies with partial aggregates; ``per-device`` runs one Flower node per device
    (the faithful mode, and the one for real devices). ``engine: auto`` picks ``inline`` for runs
    too small to pay back Ray's fixed cost (~16 s on 2 cores) and ``ray`` from 45,000
    device-rounds on, the measured break-even (``fedsim.runner``).
    ``vectorize`` (cohort mode) trains devices
    that share a model together with ``torch.func``; off, they train one by one, bit-identical to
    per-device mode.
    """

    engine: Literal["auto", "ray", "inline"] = Field(
        "auto",
        description="inline: in this process; ray: Flower's simulation engine on Ray actors; "
        "auto: inline for small runs, else ray",
    )
    mode: Literal["cohort", "per-device"] = Field(
        "cohort",
        description="cohort: each Flower node runs a share of the round's devices; per-device: "
        "one Flower node per device (same results, slower)",
    )
    vectorize: bool = Field(
        True, description="cohort mode: train devices that share a model together (torch.func)"
    )
    actors: int = Field(2, ge=1, le=64, description="Ray actors (one CPU each)")
    round_timeout_s: Annotated[
        float, at_most(604_800.0, "a round that waits over a week has stopped")
    ] = Field(600.0, gt=0.0, description="wall-clock seconds a round may take before it fails")
    ray_address: str | None = Field(
        None,
        description="an existing Ray cluster (host:port of its head; or $FEDSIM_RAY_ADDRESS): "
        "the run uses one actor per CPU the cluster has",
    )

    @property
    def cluster(self) -> str | None:
        """The Ray cluster to run on: ``ray_address``, else ``$FEDSIM_RAY_ADDRESS``, else none."""
        return self.ray_address or os.environ.get("FEDSIM_RAY_ADDRESS") or None


class RegistrySpec(_Spec):
    """The registry a run reads devices from and writes its participation to (design §8)."""

    store: Literal["memory", "oxigraph"] = Field(
        "memory", description="memory: rebuilt each run; oxigraph: a persistent store (db)"
    )
    db: PathText | None = Field(
        None, description="oxigraph only: a persistent store folder (relative to the scenario)"
    )
    data: list[PathText] = Field(
        default_factory=list, description="Turtle files of fleet devices (relative paths)"
    )
    write_back: bool = Field(True, description="record who took part in which round, and how")


class OutputSpec(_Spec):
    dir: PathText = Field(
        "results", description="folder that holds the run folders (relative to where fedsim runs)"
    )
    checkpoint: bool = Field(
        True, description="checkpoint every round, so `fedsim run --resume` can continue a run"
    )
    trackers: list[Literal["tensorboard", "mlflow"]] = Field(
        default_factory=list,
        description="also log the run to these experiment trackers (optional extras: "
        "pip install 'fedsim[trackers]'): TensorBoard event files in the run folder, an MLflow "
        "file store (or $MLFLOW_TRACKING_URI)",
    )


_KINDS_FIX = "e.g. kind: fedavg (fedsim algorithms lists the kinds), or package.module:ClassName"


def _kind_error(kind: object, what: str, fix: str) -> ValidationError:
    """A validation error at ``algorithm.kind`` in the scenario loader's what/fix form."""
    error = ValueError(f"{what}; {fix}" if fix else what)
    return ValidationError.from_exception_data(
        "algorithm",
        [{"type": "value_error", "loc": ("kind",), "input": kind, "ctx": {"error": error}}],
    )


class StalenessSpec(_Spec):
    """How much an update that started ``τ`` server updates ago still counts (Xie et al.)."""

    kind: Literal["constant", "polynomial", "hinge"] = Field(
        "polynomial",
        description="constant: 1; polynomial: (1+τ)^-a; hinge: 1 up to b, then 1/(a(τ-b)+1)",
    )
    a: float = Field(0.5, ge=0.0, description="the decay exponent (polynomial) or slope (hinge)")
    b: int = Field(4, ge=0, description="hinge: the staleness up to which an update counts fully")


class AsyncSpec(_Spec):
    """An asynchronous federation on the simulated clock (fedsim.core.asynchrony): devices start
    from the model version current when they start, the server folds updates in as they arrive;
    ``rounds`` counts server updates."""

    strategy: Literal["fedbuff", "fedasync"] = Field(
        "fedbuff",
        description="fedbuff: buffer K updates, apply their weighted mean change; "
        "fedasync: mix every arrival in at once",
    )
    buffer_size: int = Field(10, ge=1, description="fedbuff's K: arrivals per server update")
    concurrency: int = Field(20, ge=1, description="C: devices training at once")
    server_lr: float = Field(
        1.0, gt=0.0, description="fedbuff: the server learning rate η; fedasync: the mixing α"
    )
    staleness: StalenessSpec = Field(
        StalenessSpec(), description="how much a stale update is down-weighted"
    )


class Scenario(_Spec):
    name: FileName = Field(description="the run's name: its results folder is named after it")
    description: str = Field("", description="one line on what the scenario shows")
    seed: Seed = Field(
        0, description="seeds everything random (data split, sampling, faults, initial model)"
    )
    task: TaskSpec = Field(TaskSpec(), description="what is learned: the dataset and the model")
    fleet: FleetSpec = Field(
        description="the devices (groups by profile and count), their data split, and costs"
    )
    algorithm: SerializeAsAny[Algorithm] = Field(
        description="kind: a built-in (fedsim algorithms), an installed plugin, or "
        "package.module:ClassName; the other keys are that algorithm's"
    )
    rounds: Rounds = Field(ge=1, description="global rounds (asynchronous runs: server updates)")
    clients_per_round: DeviceCount | None = Field(
        None, ge=1, description="default: the whole fleet"
    )
    deadline_s: float | None = Field(
        None, gt=0.0, description="simulated seconds a round waits; later devices are cut"
    )
    evaluation: EvaluationSpec = Field(
        EvaluationSpec(), description="when and how the global model is scored"
    )
    execution: ExecutionSpec = Field(
        ExecutionSpec(), description="how the fleet is executed; never changes the results"
    )
    registry: RegistrySpec | None = Field(
        None, description="the device registry the run reads and records to (default: in memory)"
    )
    topology: TopologySpec | None = Field(
        None, description="devices behind gateways, gateways behind edge servers (default: a star)"
    )
    output: OutputSpec = Field(OutputSpec(), description="where and what the run writes")
    asynchrony: AsyncSpec | None = Field(
        None, description="an asynchronous federation (FedBuff, FedAsync); default: rounds"
    )

    @field_validator("algorithm", mode="wrap")
    @classmethod
    def _algorithm_of_its_kind(
        cls, value: object, handler: ValidatorFunctionWrapHandler
    ) -> Algorithm:
        """Validate ``algorithm:`` with the class its ``kind`` names (open: users add kinds)."""
        if isinstance(value, Algorithm):
            return value
        if not isinstance(value, dict):
            return handler(value)  # type: ignore[no-any-return]  # pydantic's own "a mapping"
        kind = value.get("kind")
        if kind is None:
            raise _kind_error(kind, "'kind' missing: an algorithm names its kind", _KINDS_FIX)
        if not isinstance(kind, str):
            what = f"kind must be a name, got {shown(kind)}"
            raise _kind_error(kind, what, _KINDS_FIX)
        try:
            found = algorithm_class(kind)
        except FedsimError as exc:
            raise _kind_error(kind, exc.what, exc.fix) from None
        return found.model_validate(value)

    @property
    def cohort_size(self) -> int:
        return self.clients_per_round or self.fleet.size

    @property
    def local_rounds(self) -> int:
        """Device rounds per global round behind a gateway (1 in a star)."""
        return self.topology.local_rounds if self.topology is not None else 1

    @property
    def upload(self) -> Upload:
        """How devices' updates travel up (number format; dense or top-P sparse)."""
        return Upload(self.fleet.payload_dtype, self.algorithm.upload_fraction)

    def digest(self) -> str:
        """SHA-256 of the validated scenario (defaults included), stable across key order."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def _algorithm_problems(self) -> list[tuple[str, str, str]]:
        """The algorithm's own checks; a plugin whose ``problems()`` fails or answers in another
        form is itself the problem (located at its kind, never a traceback)."""
        kind = self.algorithm.kind
        try:
            found = list(self.algorithm.problems(self))
        except Exception as exc:
            what = f"{clip(kind)}'s problems() raised {type(exc).__name__}: {clip(str(exc))}"
            return [("algorithm.kind", what, "fix the algorithm's problems(scenario)")]
        for problem in found:
            if not (
                isinstance(problem, tuple)
                and len(problem) == 3
                and all(isinstance(part, str) for part in problem)
            ):
                what = f"{clip(kind)}'s problems() gave {shown(problem)}, not (where, what, fix)"
                return [("algorithm.kind", what, "return a list of (where, what, fix) strings")]
        return found

    def _async_problems(self) -> list[tuple[str, str, str]]:
        """What an asynchronous federation cannot combine with."""
        spec = self.asynchrony
        if spec is None:
            return []
        problems = []
        if not self.algorithm.asynchronous:
            problems.append(
                (
                    "asynchrony",
                    f"{clip(self.algorithm.kind)} has its own server step, which FedBuff and "
                    "FedAsync would replace",
                    "use it with rounds (drop asynchrony), or an algorithm whose server step "
                    "moves toward the devices' models (fedavg, fedprox, tinyreptile)",
                )
            )
        unsupported = (
            ("deadline_s", self.deadline_s is not None, "no round to cut: remove deadline_s"),
            ("topology", self.topology is not None, "asynchrony runs on a star: remove topology"),
            (
                "clients_per_round",
                self.clients_per_round is not None,
                "asynchrony.concurrency says how many devices train at once: remove it",
            ),
        )
        for where, present, fix in unsupported:
            if present:
                problems.append((where, f"{where} does not apply to an asynchronous run", fix))
        if spec.concurrency > self.fleet.size:
            problems.append(
                (
                    "asynchrony.concurrency",
                    f"{spec.concurrency} devices at once, but the fleet has {self.fleet.size}",
                    f"set it to at most {self.fleet.size}",
                )
            )
        if spec.strategy == "fedasync" and spec.server_lr > 1:
            problems.append(
                (
                    "asynchrony.server_lr",
                    f"fedasync mixes with α = {spec.server_lr:g}: above 1 it overshoots the "
                    "device's model",
                    "use a mixing α in (0, 1]",
                )
            )
        return problems

    def consistency_problems(self) -> list[tuple[str, str, str]]:
        """Cross-field problems as (dotted path, what, fix)."""
        problems = []
        if self.fleet.size > MAX_DEVICES:
            problems.append(
                (
                    "fleet.groups",
                    f"{self.fleet.size:,} devices in all: every device is simulated in this "
                    f"process, its profile and data held in memory",
                    f"use at most {MAX_DEVICES:,}",
                )
            )
        if self.clients_per_round is not None and self.clients_per_round > self.fleet.size:
            problems.append(
                (
                    "clients_per_round",
                    f"{self.clients_per_round} devices per round, but the fleet has only "
                    f"{self.fleet.size}",
                    f"set it to at most {self.fleet.size} or add devices to fleet.groups",
                )
            )
        attached = [i for i, g in enumerate(self.fleet.groups) if g.attached is not None]
        if attached and not self.algorithm.on_device:
            problems.append(
                (
                    f"fleet.groups[{attached[0]}].attached",
                    f"attached devices run the on-device learner (a TinyOL head, one SGD step per "
                    f"sample), not {self.algorithm.kind}",
                    "set algorithm.kind: tinyol, or simulate this device (drop attached)",
                )
            )
        ports = [g.attached.port for g in self.fleet.groups if g.attached is not None]
        if len(set(ports)) < len(ports):
            problems.append(
                ("fleet.groups", "two attached groups name the same port", "one port per device")
            )
        problems += self._algorithm_problems()
        problems += self._async_problems()
        if self.topology is not None:
            problems += topology_problems(self.topology, self.fleet)
        try:  # a user's dataset or model (package.module:attr) must import and be the right kind
            model_builder(self.task.model)
            data = dataset_source(self.task.dataset)
        except FedsimError as exc:
            return [*problems, (exc.where, exc.what, exc.fix)]
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
# below it, Ray's fixed cost (start-up, actors, stop) is more than its second core saves. Measured
# with `python -m benchmarks.ray_startup` (2 shared cores, lean local Ray, 2 actors, 2026-12-07):
# inline 8.5 / 18.8 / 30.8 / 72.5 s and Ray 20.3 / 33.4 / 42.0 / 69.0 s at 2k / 10k / 20k / 50k
# device-rounds; fitted, inline 5.2 s + 1.34 ms and Ray 21.2 s + 0.97 ms a device-round, which
# cross at ~44,000.
AUTO_RAY_MIN_DEVICE_ROUNDS = 45_000


def choose_engine(
    scenario: Scenario, engine: Literal["auto", "ray", "inline"] | None = None
) -> Literal["ray", "inline"]:
    """The engine a run uses: the one asked for, or for ``auto`` the faster one for its size."""
    engine = engine or scenario.execution.engine
    if engine != "auto":
        return engine
    if scenario.execution.cluster:  # a cluster was named: use it
        return "ray"
    work = scenario.cohort_size * scenario.rounds
    return "ray" if (os.cpu_count() or 1) >= 2 and work >= AUTO_RAY_MIN_DEVICE_ROUNDS else "inline"
