"""FedIns building blocks (design §6.6): a small ViT with SSF slots, and instance-adaptive SSF
pools.

SSF (Lian et al.) scales and shifts features, y = γ⊙x + β, after the backbone's layers; the
backbone stays frozen and only γ, β (and a head) train. Here the ViT has SSF slots after the patch
embedding, each LayerNorm, qkv, the attention projection, both MLP layers and the final norm, and
takes γ, β as *inputs* (one row per instance, or one row for the batch), so a pool can hand every
instance its own SSF. Why a ViT rather than a CNN: it is the architecture the paper inserts SSF
into, and with 7×7 patches on 28×28 images it is 16 tokens, cheap on a CPU.

A FedIns pool holds M entries, each a full SSF vector (γ and β over every slot), a key and a head.
An instance's query is the frozen backbone's feature *without* SSF; its cosine similarity to the
keys picks the top-N entries, whose γ, β and heads are averaged for it alone: a gather with
``[B, N]`` indices and a mean over N only, batched (the reference code loops one instance at a
time because its batched version also averaged across the batch).

Keys start as the reference code's (timm ``trunc_normal_``, std 0.02, cut at ±2): the gradient of
a cosine similarity scales as 1/‖k‖, so keys drawn N(0, 1) (‖k‖ ≈ √dim = 8) move ~50× more slowly
than keys of norm ≈ 0.16 and never specialise (measured: most of 25 entries then serve both
domains of mnist-mixed).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

__all__ = ["KEY_STD", "FedInsNet", "Route", "SsfViT", "identity_ssf", "inverted"]

KEY_STD = 0.02  # the reference code's key init: trunc_normal_(std=0.02), bounds ±2 (timm's)
Route = Literal["keys", "inversion"]


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, ssf: _Slots) -> torch.Tensor:
        b, t, d = x.shape
        h = ssf(self.norm1(x))
        qkv = ssf(self.qkv(h)).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = torch.softmax(qkv[0] @ qkv[1].transpose(-2, -1) / (d // self.heads) ** 0.5, dim=-1)
        x = x + ssf(self.proj((attn @ qkv[2]).transpose(1, 2).reshape(b, t, d)))
        h = ssf(self.norm2(x))
        return x + ssf(self.fc2(nn.functional.gelu(ssf(self.fc1(h)))))


class _Slots:
    """Hands out consecutive slices of per-instance γ, β (``[B or 1, S]``) to the SSF slots, in
    the order the forward pass meets them; ``None``: the identity (the bare backbone)."""

    def __init__(self, gamma: torch.Tensor | None, beta: torch.Tensor | None) -> None:
        self.gamma, self.beta, self.at = gamma, beta, 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        width = x.shape[-1]
        if self.gamma is None or self.beta is None:
            self.at += width
            return x
        g = self.gamma[:, self.at : self.at + width]
        s = self.beta[:, self.at : self.at + width]
        self.at += width
        shape = (g.shape[0],) + (1,) * (x.dim() - 2) + (width,)  # broadcast over tokens
        return x * g.reshape(shape) + s.reshape(shape)


class SsfViT(nn.Module):
    """A small ViT (patches of ``patch``×``patch``, a CLS token, ``depth`` blocks) whose SSF slots
    take γ, β from the caller; ``features`` is the CLS token after the final norm."""

    def __init__(
        self,
        side: int = 28,
        patch: int = 7,
        dim: int = 64,
        depth: int = 4,
        heads: int = 4,
        hidden: int = 128,
        classes: int = 10,
    ) -> None:
        super().__init__()
        if side % patch:
            raise ValueError(f"image side {side} is not a multiple of the patch size {patch}")
        self.side, self.dim, self.depth, self.hidden = side, dim, depth, hidden
        self.embed = nn.Conv2d(1, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, (side // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.ModuleList(_Block(dim, heads, hidden) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    @property
    def ssf_width(self) -> int:
        """Numbers in one SSF vector (γ or β) over every slot."""
        per_block = 4 * self.dim + 3 * self.dim + self.hidden  # norm1, proj, norm2, fc2; qkv; fc1
        return self.dim + self.depth * per_block + self.dim  # + patch embedding + final norm

    def features(
        self, x: torch.Tensor, gamma: torch.Tensor | None = None, beta: torch.Tensor | None = None
    ) -> torch.Tensor:
        ssf = _Slots(gamma, beta)
        tokens = ssf(self.embed(x.reshape(-1, 1, self.side, self.side)).flatten(2).transpose(1, 2))
        tokens = torch.cat([self.cls.expand(len(tokens), -1, -1), tokens], dim=1) + self.pos
        for block in self.blocks:
            tokens = block(tokens, ssf)
        out: torch.Tensor = ssf(self.norm(tokens[:, 0]))
        assert ssf.at == self.ssf_width
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.head(self.features(x))
        return result


def identity_ssf(width: int, rows: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """γ = 1, β = 0: SSF that changes nothing."""
    return torch.ones(rows, width), torch.zeros(rows, width)


def inverted(x: torch.Tensor) -> torch.Tensor:
    """Whether each image ``[B, ...]`` of a half-inverted dataset (``mnist-mixed``,
    ``fashion-mixed``) is an inverted one: its top-left pixel is paper-white. Every plain MNIST
    and Fashion-MNIST image has that pixel ≤ 0.063, so this is the true domain, exactly
    (``tests/test_fedins_domain.py`` checks every image)."""
    return x.reshape(len(x), -1)[:, 0] > 0.5


class FedInsNet(nn.Module):
    """A frozen ``SsfViT`` and a pool of ``entries`` × (SSF γ, β; key; head). Each instance gets
    the mean of its top-``top_n`` entries by cosine similarity of the bare backbone's feature to
    the keys. ``last_key_loss`` holds λ's term of the last forward, mean over the batch of
    1 − Σ cos(q, k_i) over the selected keys (design §6.6). ``entries=1, top_n=1`` is the
    "federated SSF" baseline (one SSF and head per client). ``route="inversion"`` (2 entries,
    top 1) is the domain oracle: each instance takes entry 0 or 1 by its true domain
    (``inverted``), the upper bound of what key routing can learn on two domains."""

    def __init__(
        self,
        backbone: SsfViT,
        classes: int,
        entries: int = 25,
        top_n: int = 3,
        seed: int = 0,
        route: Route = "keys",
    ) -> None:
        super().__init__()
        if not 1 <= top_n <= entries:
            raise ValueError(f"top_n must be within 1..entries ({entries}), got {top_n}")
        if route == "inversion" and (entries, top_n) != (2, 1):
            raise ValueError(
                f"the domain oracle routes to 1 of 2 entries, got {top_n} of {entries}"
            )
        self.backbone, self.top_n, self.route = backbone, top_n, route
        for p in backbone.parameters():
            p.requires_grad_(False)
        g = torch.Generator().manual_seed(seed)
        width, dim = backbone.ssf_width, backbone.dim
        self.gammas = nn.Parameter(1.0 + 0.02 * torch.randn(entries, width, generator=g))
        self.betas = nn.Parameter(0.02 * torch.randn(entries, width, generator=g))
        keys = torch.empty(entries, dim)
        nn.init.trunc_normal_(keys, std=KEY_STD, a=-2.0, b=2.0, generator=g)
        self.keys = nn.Parameter(keys)
        self.head_w = nn.Parameter(0.02 * torch.randn(entries, classes, dim, generator=g))
        self.head_b = nn.Parameter(torch.zeros(entries, classes))
        self.last_key_loss = torch.zeros(())

    def select(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-N entry indices ``[B, N]`` and their cosine similarities ``[B, N]`` (the oracle:
        the domain's entry, similarity 1, so no key loss)."""
        if self.route == "inversion":
            return inverted(x).long()[:, None], torch.ones(len(x), 1)
        with torch.no_grad():
            query = self.backbone.features(x)
        cos = nn.functional.normalize(query, dim=-1) @ nn.functional.normalize(self.keys, dim=-1).T
        sims, index = cos.topk(self.top_n, dim=1)
        return index, sims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index, sims = self.select(x)
        gamma, beta = self.gammas[index].mean(1), self.betas[index].mean(1)  # [B, S]
        w, b = self.head_w[index].mean(1), self.head_b[index].mean(1)  # [B, C, D], [B, C]
        features = self.backbone.features(x, gamma, beta)
        self.last_key_loss = (1.0 - sims.sum(dim=1)).mean()
        logits: torch.Tensor = torch.einsum("bcd,bd->bc", w, features) + b
        return logits
