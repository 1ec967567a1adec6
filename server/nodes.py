"""Who is in the federation: the Flower nodes of a run and what each one is.

Per-device mode maps each device to the node that is it (``discover``); cohort mode uses every
node as a worker (``find_workers``), and with a topology asks which nodes play a gateway
(``find_gateway_nodes``: node config ``gateway='name'``).
"""

from __future__ import annotations

import time

from flwr.app import Message, MessageType, RecordDict
from flwr.serverapp import Grid

from devices.fleet import Fleet
from fedsim.core.errors import FedsimError
from fedsim.core.records import CONFIG, DEVICE_ID, METRICS, NODE_GATEWAY

__all__ = ["discover", "find_gateway_nodes", "find_workers", "wait_for_nodes"]


def wait_for_nodes(grid: Grid, wanted: int, timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    node_ids = list(grid.get_node_ids())
    while len(node_ids) < wanted and time.monotonic() < deadline:
        time.sleep(0.1)
        node_ids = list(grid.get_node_ids())
    return sorted(node_ids)


def find_workers(grid: Grid, timeout_s: float) -> list[int]:
    """Cohort mode: every node is a worker; how many there are never changes the results."""
    workers = wait_for_nodes(grid, 1, timeout_s)
    if not workers:
        raise FedsimError(
            "federation", "no Flower node joined the run", "start at least one SuperNode"
        )
    return workers


def find_gateway_nodes(
    grid: Grid, workers: list[int], fleet: Fleet, timeout_s: float
) -> dict[int, int]:
    """Cohort mode with gateways: which worker nodes play which gateway (node config
    ``gateway='name'``, e.g. a Raspberry Pi SuperNode with the gateway's devices on its serial
    ports). The other gateways go to the workers round-robin."""
    topology = fleet.topology
    if topology is None or not topology.gateways:
        return {}
    queries = [
        Message(RecordDict(), dst_node_id=node_id, message_type=MessageType.QUERY)
        for node_id in workers
    ]
    index = {g.name: g.index for g in topology.gateways}
    nodes: dict[int, int] = {}
    for reply in grid.send_and_receive(queries, timeout=timeout_s):
        if reply.has_error() or CONFIG not in reply.content:
            continue
        name = str(reply.content[CONFIG][NODE_GATEWAY])
        if name not in index or not topology.gateways[index[name]].devices:
            raise FedsimError(
                "federation",
                f"node {reply.metadata.src_node_id} plays gateway '{name}', which is not a "
                "gateway with devices in this scenario's topology",
                "fix its --node-config gateway='…' (the names are in topology.gateways)",
            )
        if index[name] in nodes:
            raise FedsimError(
                "federation",
                f"nodes {nodes[index[name]]} and {reply.metadata.src_node_id} both play gateway "
                f"'{name}'",
                "give each gateway SuperNode its own gateway='…'",
            )
        nodes[index[name]] = reply.metadata.src_node_id
    return nodes


def discover(grid: Grid, fleet: Fleet, timeout_s: float) -> dict[int, int]:
    """Per-device mode: map device id → node id by asking every node which device it is."""
    node_ids = wait_for_nodes(grid, len(fleet), timeout_s)
    queries = [
        Message(RecordDict(), dst_node_id=node_id, message_type=MessageType.QUERY)
        for node_id in node_ids
    ]
    nodes: dict[int, int] = {}
    for reply in grid.send_and_receive(queries, timeout=timeout_s):
        if not reply.has_error():
            device_id = int(reply.content[METRICS][DEVICE_ID])  # type: ignore[arg-type]
            nodes[device_id] = reply.metadata.src_node_id
    missing = sorted(set(range(len(fleet))) - set(nodes))
    if missing:
        raise FedsimError(
            "federation",
            f"{len(missing)} of {len(fleet)} devices have no Flower node "
            f"(e.g. device {missing[0]})",
            "start one node per device (num-supernodes = fleet size)",
        )
    return nodes
