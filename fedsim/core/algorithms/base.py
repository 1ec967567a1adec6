"""The algorithm protocol: one object answers everything the engine asks about an algorithm.

An algorithm is a pydantic model (its fields are the scenario's ``algorithm:`` keys, validated
like every other spec) with the methods below. The engine calls only these; no module outside
``fedsim.core.algorithms`` asks which algorithm it runs (``tests/test_layering.py`` checks that).

What the engine guarantees an algorithm, whichever execution mode and number of workers:

* every device's ``learner().train`` gets the global arrays, its own data and a seed derived from
  the scenario seed, the round and the device id; a stateful learner gets the device's own state
  as it left it (loaded and saved around the call, kept in checkpoints);
* updates reach ``aggregator()`` in a fixed grouping (blocks of the cohort sorted by device id;
  ``fedsim.core.reduce``), so the reduced partial is bit-identical in per-device and cohort mode;
* ``server_step`` runs once per round on the server with the finalized mean; its ``state`` is kept
  between rounds and in checkpoints, so a resumed run continues bit-identically.

Methods marked *required* have no default: ``missing_methods`` names those a class lacks, and
``fedsim validate`` refuses a scenario whose algorithm is incomplete.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from fedsim.core.algorithms.prototype_sums import ClassSums
from fedsim.core.payload import Upload, non_finite
from fedsim.core.reduce import Aggregator, Arrays, ModelUpdate, WeightedMean
from fedsim.core.specs import Spec
from fedsim.core.state import DeviceState

if TYPE_CHECKING:
    from torch import nn

    from fedsim.core.cohort import DeviceOutcome
    from fedsim.core.fleet_spec import AttachedSpec
    from fedsim.core.scenario import Scenario

__all__ = [
    "REQUIRED",
    "Algorithm",
    "DeviceUpdate",
    "Learner",
    "ModelAggregator",
    "ModelTask",
    "NonFiniteUpdateError",
    "Problem",
    "Received",
    "ServerRound",
    "ServerState",
    "missing_methods",
]

# (where in the scenario, what is wrong, how to fix it)
Problem = tuple[str, str, str]
# an algorithm's own server state (FedAvgM's momentum...): named float arrays, checkpointed
ServerState = dict[str, NDArray[np.float32]]
ModelAggregator = Aggregator[Any, Any, Arrays]


class Learner(Protocol):
    """What one device does with the global model in one round.

    Optional: ``vectorized() -> object | None``. Cohort mode then trains many devices of the
    learner at once (``clients.vectorized``): return an object with ``supports(model)`` and
    ``train_many(model, global_arrays, data, seeds)`` (a ``BatchTrainer``), or a learner whose
    type has a built-in kernel; None (or no method) trains devices one by one."""

    # True: ``state`` (the device's own, kept between rounds in the run's DeviceStateStore) is
    # loaded before and saved after each round; False: it is always empty and never stored.
    stateful: ClassVar[bool]

    def train(
        self,
        model: nn.Module,
        x: NDArray[np.float32],
        y: NDArray[Any],
        seed: int,
        state: DeviceState,
    ) -> float:
        """Train ``model`` in place on one device's data (may update ``state``); return the mean
        training loss."""
        ...


class NonFiniteUpdateError(ValueError):
    """A device's training diverged (NaN or inf in its loss or its model): the device fails."""


@dataclass(frozen=True)
class DeviceUpdate:
    """What one device sends after its round, as the server decodes it."""

    arrays: Arrays  # as the server receives them (rounded to the payload's number format)
    num_examples: int
    train_loss: float
    trained: tuple[bool, ...] | None = None  # which tensors trained (None: all)
    wire: dict[str, NDArray[np.generic]] | None = None  # what it sends (``Scenario.upload``)
    report: ClassSums | None = None  # prototype averaging: its mission's per-class sums
    measured_s: float | None = None  # an attached device's own measurements of its training
    measured_mj: float | None = None

    def outcome(self, device_id: int) -> DeviceOutcome:
        from fedsim.core.cohort import DeviceOutcome  # Flower's records: only where it runs

        return DeviceOutcome(
            device_id,
            "ok",
            self.num_examples,
            self.train_loss,
            "",
            self.measured_s,
            self.measured_mj,
        )

    def update(self, mission: str = "") -> ModelUpdate | ClassSums:
        """What the aggregator accumulates; ``mission`` names a report ("device:round")."""
        if self.report is not None:
            return replace(self.report, mission=mission)
        if self.trained is None:
            return (self.arrays, self.num_examples)
        return (self.arrays, self.num_examples, self.trained)


@dataclass(frozen=True)
class ModelTask:
    """What an algorithm may build its model from: the scenario's ``task.model`` (built by
    ``build``), the data's shape, the seed of the model's initial weights and the scenario seed
    (for cached pre-training)."""

    model: str
    num_features: int
    num_outputs: int
    seed: int
    scenario_seed: int
    build: Callable[[], nn.Module] = field(repr=False, compare=False)


@dataclass(frozen=True)
class Received:
    """What the server knows of a device's reply besides its payload."""

    mission: str  # "device:round": names the update
    num_examples: int  # its weight, as the device reported it
    loss: float
    sent: tuple[bool, ...]  # the tensors the round asked it to send


@dataclass(frozen=True)
class ServerRound:
    """What the server step knows of the round it ends."""

    round: int  # 1-based
    rounds: int
    delivered: int  # device updates reduced this round
    fleet_size: int
    names: tuple[str, ...]  # the model's tensors, in array order


# The methods a complete algorithm must define itself (the base class has no answer for them).
REQUIRED = ("learner", "samples_processed", "batch_size")


class Algorithm(Spec):
    """An algorithm: its scenario keys (fields) and its behaviour (methods). Defaults are
    FedAvg's: every device trains the whole model and sends it; the server takes the
    example-weighted mean."""

    kind: str = Field(
        description="the algorithm: a built-in, an installed plugin, or package.module:ClassName"
    )
    # True: the server step only moves θ toward what devices send (FedAvg's mean, Reptile's
    # step), so an asynchronous federation (scenario.asynchrony: FedBuff, FedAsync) can replace
    # it; an algorithm with its own server step (sums, pools, a head) keeps False and is refused.
    asynchronous: ClassVar[bool] = False

    # -- the device side ------------------------------------------------------------------------

    def learner(self) -> Learner:
        """*Required.* The device-side step (``Learner.train``)."""
        raise NotImplementedError

    def device_round(
        self,
        model: nn.Module,
        x: NDArray[np.float32],
        y: NDArray[Any],
        global_arrays: Arrays,
        payload_dtype: str,
    ) -> DeviceUpdate | None:
        """For an algorithm whose device does not train and send its model (prototype averaging
        reports class sums): the update it sends. None (the default): the engine trains with
        ``learner()`` and sends the model's change."""
        return None

    @property
    def on_device(self) -> bool:
        """True: an attached microcontroller can run this device step itself (TinyOL's head)."""
        return False

    def attached_learner(self, attached: AttachedSpec) -> Learner:
        """The device step run on the attached device at ``attached.port`` (``on_device``)."""
        raise ValueError(
            f"{attached.port}: an attached device runs the TinyOL head on the device, not "
            f"{self.kind}: run a tinyol scenario, or this node without serial-port"
        )

    def seen_classes(self, global_arrays: Arrays) -> NDArray[np.bool_] | None:
        """Class-incremental scoring (with ``missions()``): the classes the global model knows so
        far, which the test set is restricted to. None: score on the whole test set."""
        return None

    # -- what the model is and what travels -----------------------------------------------------

    def build_model(self, task: ModelTask) -> nn.Module:
        """The model the federation trains (default: the scenario's ``task.model``)."""
        return task.build()

    def pretrained(self, model: nn.Module, seed: int) -> None:
        """Put pre-trained parts into the initial global model on the server (default: none)."""

    def pretrained_for(self, model: nn.Module, seed: int, dataset: str) -> None:
        """``pretrained`` for a task on ``dataset``, which the engine calls: an algorithm whose
        pre-training depends on the task's data (TinyOL's extractor: the classes the devices do
        not learn) overrides this one."""
        self.pretrained(model, seed)

    def sent_down(
        self, head: tuple[bool, ...], frozen: tuple[bool, ...]
    ) -> tuple[bool, ...] | None:
        """Which tensors travel down each round (None: all), given which are the head and which
        ``frozen``: a frozen part ships in flash once; a head-only device (TinyOL) holds its
        frozen extractor in flash and receives only the head."""
        if self.head_only:
            return head
        if any(frozen):
            return tuple(not f for f in frozen)
        return None

    def mission_bytes(self, classes: int, shapes: list[tuple[int, ...]], itemsize: int) -> int:
        """With ``missions()``: the bytes a device's report of ``classes`` classes takes up."""
        raise NotImplementedError(f"{self.kind} has missions() but no mission_bytes()")

    def frozen(self, name: str) -> bool:
        """True: model tensor ``name`` never trains nor travels (a frozen pre-trained backbone)."""
        return False

    @property
    def head_only(self) -> bool:
        """True: devices only ever train the last layer (the rest is a frozen extractor)."""
        return False

    @property
    def local_head(self) -> bool:
        """True: the head stays on the device, reconstructed each round, never uploaded."""
        return False

    @property
    def upload_fraction(self) -> float:
        """Fraction of the sent parameters' changes a device uploads (1: dense)."""
        return 1.0

    def update_weight(self, num_examples: int) -> int:
        """A device's weight in the server's mean: its local samples (FedAvg)."""
        return num_examples

    # -- cost-model inputs ----------------------------------------------------------------------

    def samples_processed(self, num_examples: int) -> int:
        """*Required.* Samples one device's round runs through its model."""
        raise NotImplementedError

    if TYPE_CHECKING:  # declared for type checkers only: a subclass's field may not shadow it

        @property
        def batch_size(self) -> int:
            """*Required.* Samples per step (it sizes the activations a device holds): a field
            (the scenario sets it) or a property."""
            ...

    @property
    def state_copies(self) -> int:
        """Copies of the trainable parameters training keeps besides them (optimizer state)."""
        return 0

    @property
    def trains(self) -> bool:
        """False: devices only run the model forward (their memory must hold inference only)."""
        return True

    def missions(self) -> tuple[int, int | None] | None:
        """Class-incremental data (prototype averaging): each round a device gets this many new
        classes with this many samples each (None: all it has). None: the data do not change."""
        return None

    def recurring_missions(self) -> bool:
        """With ``missions()``: True when classes recur across devices and rounds (the reference
        environment's missions, ``devices.missions``) instead of going to one device once."""
        return False

    # -- the server side ------------------------------------------------------------------------

    def decode_update(
        self,
        wire: Mapping[str, NDArray[Any]],
        received: Received,
        global_arrays: Arrays,
        upload: Upload,
    ) -> ModelUpdate | ClassSums:
        """What the server makes of one device's payload (per-device mode): the update its
        aggregator accumulates. ``ValueError`` when it is malformed or not finite: the device is
        counted as failed and nothing of it is merged (default: the model's arrays through the
        scenario's upload codec, each checked finite)."""
        arrays = upload.decode(wire, global_arrays, received.sent)
        problem = non_finite([f"#{i}" for i in range(len(arrays))], arrays, received.loss)
        if problem:  # a device (or a SuperNode) that sends NaN or inf fails; never averaged
            raise ValueError(f"{problem}: refused")
        if all(received.sent):
            return (arrays, received.num_examples)
        return (arrays, received.num_examples, received.sent)

    def aggregator(self) -> ModelAggregator:
        """The associative reduce of the round's updates (default: FedAvg's weighted mean)."""
        return WeightedMean()

    def server_lr(self, round_: int, rounds: int) -> float:
        """ε of θ ← θ + ε·(mean − θ); 1 = take the mean (FedAvg)."""
        return 1.0

    def server_step(
        self, global_arrays: Arrays, averaged: Arrays, info: ServerRound, state: ServerState
    ) -> Arrays:
        """The new global arrays from the finalized mean; ``state`` is this algorithm's own,
        kept between rounds (default: θ ← θ + ε·(mean − θ) with ``server_lr``)."""
        return step_toward(global_arrays, averaged, self.server_lr(info.round, info.rounds))

    # -- its own scenario checks ----------------------------------------------------------------

    def problems(self, scenario: Scenario) -> list[Problem]:
        """What in ``scenario`` this algorithm cannot run with (located, with a fix)."""
        return []


def step_toward(global_arrays: Arrays, averaged: Arrays, epsilon: float) -> Arrays:
    """θ ← θ + ε·(mean − θ): Reptile's outer step; ε = 1 returns the mean itself (FedAvg)."""
    if epsilon == 1.0:
        return averaged
    step = np.float32(epsilon)
    return [
        (g + step * (a - g)).astype(np.float32)
        for g, a in zip(global_arrays, averaged, strict=True)
    ]


def schedule(start: float, end: float, kind: str, round_: int, rounds: int) -> float:
    """A value going from ``start`` at round 1 to ``end`` over the run (linear, cosine, or
    constant ``start``)."""
    if kind == "constant":
        return start
    done = (round_ - 1) / rounds  # 0 at the first round, as in Reptile's reference code
    if kind == "cosine":
        done = 0.5 * (1.0 - math.cos(math.pi * done))
    return (1.0 - done) * start + done * end


def missing_methods(cls: type) -> list[str]:
    """The required methods ``cls`` leaves to the base class, and a missing ``kind`` field."""
    if not isinstance(cls, type) or not issubclass(cls, Algorithm):
        return ["the Algorithm base class"]
    missing = [
        m
        for m in REQUIRED
        if m not in cls.model_fields and getattr(cls, m, None) is getattr(Algorithm, m, None)
    ]
    if "kind" not in cls.model_fields:
        missing.append("kind")
    if cls.missions is not Algorithm.missions and cls.mission_bytes is Algorithm.mission_bytes:
        missing.append("mission_bytes (it has missions())")
    return missing
