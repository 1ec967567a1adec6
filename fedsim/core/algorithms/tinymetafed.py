"""TinyMetaFed (Ren et al.; design §6.3): TinyReptile with partial local reconstruction and
top-P% upload.

``local: head``: the last layer is local; each round the device first reconstructs it on its
support samples (``support_steps``, the rest frozen), then updates the global part on its query
samples (``steps``, the head frozen), and uploads only the ``top_p`` largest changes of the global
part as (index, value) pairs. The server's Reptile step sees the sparse changes.

The head never travels up, so the server's copy of it never trains: reconstruction starts from
that copy each round (stateless devices, as in federated reconstruction). ``head_init: zero`` (the
default) makes it a zero head, which predicts nothing until the support samples speak, instead of
θ₀'s random one, whose noise the few support steps must first undo; a held-out device reconstructs
from the same zero head. ``support_passes`` repeats the reconstruction over the support samples
(the device keeps those few samples for the passes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, model_validator

from fedsim.core.algorithms.base import Learner, Problem
from fedsim.core.algorithms.tinyreptile import OnlineReptile
from fedsim.core.specs import Steps
from fedsim.core.state import DeviceState

if TYPE_CHECKING:
    from torch import nn

    from fedsim.core.scenario import Scenario

__all__ = ["ReconstructThenUpdate", "TinyMetaFed"]


class TinyMetaFed(OnlineReptile):
    local: Literal["head", "none"] = Field("head", description="parameters kept on the device")
    support_steps: Steps = Field(2, ge=0, description="online steps reconstructing the local part")
    support_passes: Steps = Field(
        1, ge=1, description="passes over the support samples when reconstructing the head"
    )
    head_init: Literal["zero", "theta"] = Field(
        "zero", description="reconstruct from a zero head, or from θ₀'s (never trained) head"
    )
    top_p: float = Field(
        0.25, gt=0.0, le=1.0, description="fraction of global changes uploaded (largest |Δ|)"
    )

    @model_validator(mode="after")
    def _head_is_reconstructed(self) -> TinyMetaFed:
        if self.local == "head" and self.support_steps < 1:
            raise ValueError(
                "with local: head the head is only ever trained by the support steps; set "
                "support_steps to at least 1 (or local: none)"
            )
        return self

    def learner(self) -> Learner:
        return ReconstructThenUpdate(
            self.lr,
            self.steps,
            self.support_steps,
            self.batch_size,
            self.local_head,
            self.support_passes,
        )

    def pretrained(self, model: nn.Module, seed: int) -> None:
        """The server's head, which every device reconstructs from, starts at zero
        (``head_init: zero``); nothing uploads it, so it stays there."""
        if not (self.local_head and self.head_init == "zero"):
            return
        import torch

        from fedsim.core.models import head_parameters

        head = head_parameters(model)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in head:
                    p.zero_()

    @property
    def upload_fraction(self) -> float:
        return self.top_p

    @property
    def local_head(self) -> bool:
        return self.local == "head"

    def samples_processed(self, num_examples: int) -> int:
        support = self.support_steps * self.support_passes if self.local_head else 0
        return (support + self.steps) * self.batch_size

    @property
    def state_copies(self) -> int:
        return 1  # θ_g as received, to compute the change to upload

    def problems(self, scenario: Scenario) -> list[Problem]:
        if self.local_head and scenario.fleet.memory_policy == "head-only":
            return [
                (
                    "fleet.memory_policy",
                    f"{self.kind} keeps the head on the device, so a device that can train only "
                    "its head would upload nothing",
                    "use memory_policy: skip, or algorithm.local: none",
                )
            ]
        return []


@dataclass(frozen=True)
class ReconstructThenUpdate:
    """TinyMetaFed's device side: reconstruct the local part (the head) on the first
    ``support_steps`` batches of the stream (``support_passes`` times over them) with the rest
    frozen, then update the global part on the next ``steps`` batches (the query samples) with the
    head frozen. Returns the mean query loss. Without a local part it is ``OnlineSteps``."""

    lr: float
    steps: int
    support_steps: int
    batch_size: int
    local_head: bool = True
    support_passes: int = 1
    stateful: ClassVar[bool] = False

    def vectorized(self) -> ReconstructThenUpdate | None:
        """Itself if ``clients.vectorized`` may train many devices of it at once; None for a
        subclass, which may train differently."""
        return self if type(self) is ReconstructThenUpdate else None

    def train(
        self,
        model: nn.Module,
        x: NDArray[np.float32],
        y: NDArray[Any],
        seed: int,
        state: DeviceState | None = None,
    ) -> float:
        import torch

        from fedsim.core.algorithms.local import sgd_steps, stream_order
        from fedsim.core.models import head_parameters

        support = self.support_steps * self.batch_size if self.local_head else 0
        order = stream_order(len(y), support + self.steps * self.batch_size, seed)
        head = head_parameters(model) if self.local_head else set()
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        inputs, targets = torch.from_numpy(x), torch.from_numpy(y)
        model.train()
        if support:
            local = [p for n, p in named if n in head]
            passes = order[:support].repeat(self.support_passes)
            sgd_steps(model, local, inputs, targets, passes, self.lr, self.batch_size)
        shared = [p for n, p in named if n not in head]
        total, seen = sgd_steps(
            model, shared, inputs, targets, order[support:], self.lr, self.batch_size
        )
        return total / max(seen, 1)
