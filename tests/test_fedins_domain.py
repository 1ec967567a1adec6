"""FedIns against its reference code and its reproduction's setting (issue 23; design §6.6):
the key init, the domain oracle, the pinned backbone seed, and the few-shot two-domain target."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedsim.core.algorithms.fedins import BackboneSpec, FedIns
from fedsim.core.algorithms.ssf import KEY_STD, FedInsNet, SsfViT, inverted


def _vit() -> SsfViT:
    torch.manual_seed(0)
    return SsfViT(depth=1, dim=64, heads=4, hidden=64)


def test_keys_start_as_the_reference_code_trunc_normal_std_002() -> None:
    keys = FedInsNet(_vit(), classes=10, entries=25, top_n=3, seed=3).keys.detach()
    assert KEY_STD == 0.02
    assert abs(float(keys.std()) - 0.02) < 0.0015  # N(0, 1) keys: std 1
    assert abs(float(keys.mean())) < 0.002
    assert float(keys.abs().max()) <= 2.0  # timm's bounds are absolute (±2), not in stds
    norms = keys.norm(dim=1)  # ~0.02·√64 = 0.16: cosine gradients ∝ 1/‖k‖ are ~50× an N(0,1)'s
    assert float(norms.max()) < 0.25


def test_the_domain_oracle_reads_the_true_domain_of_every_image() -> None:
    from fedsim.core.data import load_task_data

    for name in ("fashion-mnist", "mnist-5k"):  # every plain image, and its inverse
        data = load_task_data(name, 0)
        for x in (data.x_train, data.x_test):
            plain = torch.from_numpy(x)
            assert not bool(inverted(plain).any())
            assert bool(inverted(plain.max() - plain).all())


def test_the_oracle_routes_each_instance_to_its_domain_entry() -> None:
    net = FedInsNet(_vit(), classes=10, entries=2, top_n=1, seed=0, route="inversion")
    x = torch.rand(6, 784) * 0.5
    x[:, 0] = 0.0
    x[[1, 4]] = 1.0 - x[[1, 4]]  # inverted: a paper-white corner
    index, _ = net.select(x)
    assert index[:, 0].tolist() == [0, 1, 0, 0, 1, 0]
    net(x)
    assert float(net.last_key_loss) == 0.0  # keys play no part
    with pytest.raises(ValueError, match="1 of 2 entries"):
        FedInsNet(_vit(), classes=10, entries=3, top_n=1, route="inversion")
    with pytest.raises(ValueError, match="set entries: 2, top_n: 1"):
        FedIns(kind="fedins", route="inversion", entries=3, top_n=2)


def test_the_backbone_seed_can_be_pinned_across_scenario_seeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedsim.core.algorithms.base import ModelTask

    monkeypatch.setenv("FEDSIM_CACHE", str(tmp_path))

    def built(pin: int | None, scenario_seed: int) -> torch.Tensor:
        backbone = BackboneSpec(dataset="mnist-5k", steps=2, dim=16, depth=1, seed=pin)
        spec = FedIns(kind="fedins", backbone=backbone, entries=1, top_n=1)
        task = ModelTask("ssf-vit", 784, 10, 0, scenario_seed, build=lambda: torch.nn.Identity())
        model = spec.build_model(task)
        assert isinstance(model, FedInsNet)
        return model.backbone.embed.weight.detach().clone()

    assert torch.equal(built(0, 1), built(0, 2))
    assert not torch.equal(built(None, 1), built(None, 2))


def _rows(x: np.ndarray) -> set[bytes]:
    """Each image as 8-bit pixels (1 − (1 − v) need not be v in float32)."""
    return {row.tobytes() for row in np.rint(x.reshape(len(x), -1) * 255).astype(np.uint8)}


def test_fashion_mixed_is_few_shot_two_domain_and_unseen_by_the_backbone() -> None:
    from fedsim.core.data import load_task_data
    from fedsim.core.datasets.derived import FASHION_SHOTS

    data = load_task_data("fashion-mixed", 0)
    base = load_task_data("fashion-mnist", 0)
    assert np.bincount(data.y_train).tolist() == [FASHION_SHOTS] * 10
    for x in (data.x_train, data.x_test):
        share = float(inverted(torch.from_numpy(x)).float().mean())
        assert 0.4 < share < 0.6  # both domains, in every split

    def plain(x: np.ndarray) -> set[bytes]:
        flip = inverted(torch.from_numpy(x)).numpy()
        y = x.copy()
        y[flip] = 1.0 - y[flip]
        return _rows(y)

    pool = _rows(base.x_test)
    train, test = plain(data.x_train), plain(data.x_test)
    assert train <= pool  # only images the backbone never trained on
    assert test <= pool
    assert not train & test


@pytest.mark.parametrize(("dataset", "refused"), [("mnist-5k", True), ("fashion-mixed", False)])
def test_the_domain_oracle_is_refused_where_there_is_no_inverted_half(
    tmp_path: Path, dataset: str, refused: bool
) -> None:
    """On a dataset without inverted images every image reads as plain: the 'oracle' would be
    federated SSF with a dead entry, reported under the oracle's name."""
    from fedsim.core.errors import FedsimError
    from fedsim.core.scenario_load import load_scenario

    path = tmp_path / "oracle.yaml"
    path.write_text(
        f"name: oracle\nseed: 0\ntask: {{dataset: {dataset}, model: ssf-vit}}\n"
        "fleet: {groups: [{profile: rpi4, count: 2}]}\n"
        "algorithm: {kind: fedins, route: inversion, entries: 2, top_n: 1}\nrounds: 1\n",
        encoding="utf-8",
    )
    if refused:
        with pytest.raises(FedsimError, match=r"algorithm\.route.*no inverted half"):
            load_scenario(path)
    else:
        assert load_scenario(path).algorithm.kind == "fedins"
