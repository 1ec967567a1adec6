"""The Flower ClientApp: one message = one device's local work in one round.

Only scalars arrive from outside (the run binding, the node's ``partition-id``); the device's
data partition, profile and faults are resolved locally from the scenario.
"""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients.learners import LEARNERS
from devices.fleet import load_fleet
from fedsim.core.data import load_task_data
from fedsim.core.models import build_model, get_arrays, set_arrays
from fedsim.core.records import (
    ARRAYS,
    CONFIG,
    DEVICE_ID,
    METRICS,
    NODE_PARTITION,
    NUM_EXAMPLES,
    SERVER_ROUND,
    TRAIN_LOSS,
    RunBinding,
)
from fedsim.core.seeds import derive_seed

__all__ = ["InjectedCrashError", "app", "make_client_app"]


class InjectedCrashError(RuntimeError):
    """A crash injected by the scenario's ``faults``; to the server it looks like a real one."""


def _crashes(seed: int, round_: int, device_id: int, prob: float) -> bool:
    if prob <= 0.0:
        return False
    draw = derive_seed(seed, "crash", round_, device_id) / 2**32  # uniform in [0, 1)
    return draw < prob


def make_client_app(binding: RunBinding | None = None) -> ClientApp:
    """A ClientApp bound to one run, or reading the binding from ``context.run_config``."""
    app = ClientApp()

    def _device(context: Context) -> tuple[RunBinding, int]:
        bound = binding or RunBinding.from_run_config(dict(context.run_config))
        return bound, int(context.node_config[NODE_PARTITION])

    @app.query()
    def describe(msg: Message, context: Context) -> Message:
        _, device_id = _device(context)
        return Message(RecordDict({METRICS: MetricRecord({DEVICE_ID: device_id})}), reply_to=msg)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        bound, device_id = _device(context)
        scenario, fleet = load_fleet(bound.scenario)
        device = fleet[device_id]
        round_ = int(msg.content[CONFIG][SERVER_ROUND])  # type: ignore[arg-type]
        if _crashes(scenario.seed, round_, device_id, device.crash_prob):
            raise InjectedCrashError(f"injected crash of device {device_id} in round {round_}")

        torch.set_num_threads(1)  # one core per Ray actor; also keeps float sums reproducible
        data = load_task_data(scenario.task.dataset, scenario.seed)
        model = build_model(scenario.task.model, data.num_features, data.num_classes, 0)
        set_arrays(model, msg.content[ARRAYS].to_numpy_ndarrays())  # type: ignore[union-attr]
        learner = LEARNERS.get(scenario.algorithm.kind, "algorithm.kind")(scenario.algorithm)
        x, y = data.x_train[device.sample_indices], data.y_train[device.sample_indices]
        loss = learner.train(model, x, y, derive_seed(scenario.seed, "train", round_, device_id))
        metrics = MetricRecord(
            {DEVICE_ID: device_id, NUM_EXAMPLES: device.num_examples, TRAIN_LOSS: loss}
        )
        reply = RecordDict({ARRAYS: ArrayRecord(get_arrays(model)), METRICS: metrics})
        return Message(reply, reply_to=msg)

    return app


# The component named in pyproject's [tool.flwr.app.components] (`flwr run .`).
app = make_client_app()
