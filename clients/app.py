"""The Flower ClientApp: one message = one device's round, or one cohort's.

Only scalars arrive from outside (the run binding, the node's ``partition-id``); the scenario,
fleet and data are resolved locally. In per-device mode the node *is* device ``partition-id``; in
cohort mode the node is a worker and the message's ``CohortOrder`` names the devices to run.
"""

from __future__ import annotations

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp

from clients.work import InjectedCrashError, run_cohort, train_one
from devices.fleet import load_fleet
from fedsim.core.cohort import CohortOrder
from fedsim.core.fleet_spec import AttachedSpec
from fedsim.core.records import (
    ARRAYS,
    CONFIG,
    DEVICE_ID,
    HEAD_ONLY,
    LOCAL_ROUND,
    MEASURED_MJ,
    MEASURED_S,
    METRICS,
    NODE_GATEWAY,
    NODE_PARTITION,
    NODE_SERIAL_PORT,
    NUM_EXAMPLES,
    SERVER_ROUND,
    TRAIN_LOSS,
    RunBinding,
)

__all__ = ["InjectedCrashError", "app", "make_client_app"]


def make_client_app(binding: RunBinding | None = None) -> ClientApp:
    """A ClientApp bound to one run, or reading the binding from ``context.run_config``."""
    app = ClientApp()

    def _node(context: Context) -> tuple[RunBinding, int]:
        bound = binding or RunBinding.from_run_config(dict(context.run_config))
        return bound, int(context.node_config[NODE_PARTITION])

    @app.query()
    def describe(msg: Message, context: Context) -> Message:
        _, device_id = _node(context)
        content = RecordDict({METRICS: MetricRecord({DEVICE_ID: device_id})})
        gateway = context.node_config.get(NODE_GATEWAY)
        if gateway:  # this node plays a gateway of the scenario's topology
            content[CONFIG] = ConfigRecord({NODE_GATEWAY: str(gateway)})
        return Message(content, reply_to=msg)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        bound, node = _node(context)
        scenario, fleet = load_fleet(bound.scenario)
        config = msg.content[CONFIG]
        order = CohortOrder.from_config(config)  # type: ignore[arg-type]
        port = context.node_config.get(NODE_SERIAL_PORT)
        if port:  # this node is a gateway: its device trains over the serial bridge
            if order is not None:
                raise ValueError(
                    f"node config serial-port='{port}' needs execution.mode: per-device (in "
                    "cohort mode a node is a worker running many devices, not one device)"
                )
            fleet = fleet.attach(node, AttachedSpec(port=str(port)))
        received = msg.content[ARRAYS].to_numpy_ndarrays()  # type: ignore[union-attr]
        global_arrays = [a.astype(np.float32) for a in received]  # float16 on the wire, maybe
        if order is not None:
            aggregator = scenario.algorithm.aggregator()
            result = run_cohort(scenario, fleet, bound.out, order, global_arrays, aggregator)
            return Message(result.content(aggregator), reply_to=msg)

        round_ = int(config[SERVER_ROUND])  # type: ignore[arg-type]
        head_only = bool(config.get(HEAD_ONLY, False))
        step = int(config.get(LOCAL_ROUND, 1))  # type: ignore[arg-type]
        update = train_one(scenario, fleet, bound.out, node, round_, global_arrays, head_only, step)
        metrics = MetricRecord(
            {DEVICE_ID: node, NUM_EXAMPLES: update.num_examples, TRAIN_LOSS: update.train_loss}
        )
        if update.measured_s is not None:
            metrics[MEASURED_S] = update.measured_s
        if update.measured_mj is not None:
            metrics[MEASURED_MJ] = update.measured_mj
        assert update.wire is not None
        arrays = ArrayRecord({key: Array(a) for key, a in update.wire.items()})
        reply = RecordDict({ARRAYS: arrays, METRICS: metrics})
        return Message(reply, reply_to=msg)

    return app


# The component named in pyproject's [tool.flwr.app.components] (`flwr run .`).
app = make_client_app()
