"""An attached device's learner: the TinyOL head trains on the device, over the serial bridge.

The host plays the device's sensor and extractor: it computes each sample's features with the
frozen body of the global model (as ``OnlineHeadLearner`` does), streams them with their labels in
the round's order (TRAIN), and reads the trained head back. The device runs the same per-sample SGD
as ``edge.online_head.OnlineHead`` (in C on an MCU, with numpy on a Pi), so an attached device and a
simulated one given the same samples end within float32 rounding of each other. What the device
measured itself (time, energy) is kept in ``measured`` for ``devices.csv``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge.bridge import BridgeError, SerialBridge
from edge.messages import HeadConfig, TrainReport
from edge.online_head import OnlineHead
from fedsim.core.algorithms.local import OnlineHeadLearner
from fedsim.core.fleet_spec import AttachedSpec

__all__ = ["BridgedHeadLearner", "DeviceUnfitError"]


class DeviceUnfitError(BridgeError):
    """The attached device cannot hold the scenario's head."""


@dataclass(frozen=True)
class BridgedHeadLearner(OnlineHeadLearner):
    attached: AttachedSpec = field(kw_only=True)
    measured: list[TrainReport] = field(default_factory=list, kw_only=True)

    def steps(
        self, online: OnlineHead, features: NDArray[np.float32], y: NDArray[Any]
    ) -> tuple[NDArray[np.float32], NDArray[np.float32], float]:
        outputs, width = online.weight.shape
        config = HeadConfig(outputs, width, self.lr, online.loss)
        spec = self.attached
        with SerialBridge(
            spec.port, baudrate=spec.baudrate, timeout=spec.timeout_s, retries=spec.retries
        ) as bridge:
            hello = bridge.hello()
            why = hello.fits(config)
            if why is not None:
                raise DeviceUnfitError(
                    spec.port,
                    f"{hello.board} cannot hold the {outputs}×{width} head: {why}. Use a smaller "
                    "model (fewer features or classes) or another device",
                )
            bridge.load_head(config, online.weight, online.bias)
            report = bridge.train(config, features, y)
            weight, bias = bridge.get_head(config)
        if report.steps != len(y):
            raise BridgeError(spec.port, f"the device took {report.steps} of {len(y)} steps")
        self.measured.append(report)
        return weight, bias, report.loss_sum
