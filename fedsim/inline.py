"""The ``inline`` engine: Flower's ServerApp and ClientApp in one thread, without Ray.

``InlineGrid`` implements Flower's abstract ``Grid`` by handing each pushed Message directly to
``client_app(message, context)`` of the addressed virtual node, with a per-node ``Context`` shaped
as the simulation engine shapes it (``partition-id``, ``num-partitions``). A ClientApp that raises
yields an error reply, as under the Ray engine. It skips Ray's start-up (~4 s to ready): right for
tests, small fleets and one-core machines. Same apps, same messages, same results as ``ray``.
"""

from __future__ import annotations

import traceback
import uuid
from collections.abc import Iterable

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp import Grid, ServerApp
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from fedsim.core.records import NODE_PARTITION

__all__ = ["InlineGrid", "run_inline"]

NUM_PARTITIONS = "num-partitions"
FIRST_NODE_ID = 1_000  # arbitrary, non-zero: node 0 is the server's


class InlineGrid(Grid):
    def __init__(
        self,
        client_app: ClientApp,
        num_nodes: int,
        run_id: int = 1,
        node_configs: dict[int, dict[str, str | int | float | bool]] | None = None,
    ) -> None:
        """``node_configs``: more node config per partition, as ``flower-supernode
        --node-config`` would give a node (e.g. ``{0: {"gateway": "floor-1"}}``)."""
        self._client_app = client_app
        self._run = Run.create_empty(run_id)
        extra = node_configs or {}
        self._contexts = {
            FIRST_NODE_ID + i: Context(
                run_id=run_id,
                node_id=FIRST_NODE_ID + i,
                node_config={NODE_PARTITION: i, NUM_PARTITIONS: num_nodes, **extra.get(i, {})},
                state=RecordDict(),
                run_config={},
            )
            for i in range(num_nodes)
        }
        self._replies: dict[str, Message] = {}

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._contexts)

    def _deliver(self, message: Message) -> Message:
        context = self._contexts.get(message.metadata.dst_node_id)
        if context is None:
            error = Error(ErrorCode.NODE_UNAVAILABLE, f"no node {message.metadata.dst_node_id}")
            return Message(error, reply_to=message)
        try:
            return self._client_app(message, context)
        except Exception as exc:  # a device failure is data, as on the Ray engine
            reason = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}"
            return Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason), reply_to=message)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            ids.append(message.metadata.message_id)
            self._replies[message.metadata.message_id] = self._deliver(message)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))


def run_inline(
    server_app: ServerApp,
    client_app: ClientApp,
    num_nodes: int,
    node_configs: dict[int, dict[str, str | int | float | bool]] | None = None,
) -> None:
    """Run ``server_app`` against ``num_nodes`` inline virtual nodes, in this thread."""
    run_id = 1
    grid = InlineGrid(client_app, num_nodes, run_id, node_configs)
    context = Context(
        run_id=run_id, node_id=SUPERLINK_NODE_ID, node_config={}, state=RecordDict(), run_config={}
    )
    # Messages take their run and source node from this process-wide identity, which Flower's
    # own engines set before they start a ServerApp; restore it afterwards.
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, run_id, SUPERLINK_NODE_ID
    try:
        server_app(grid, context)
    finally:
        TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved
