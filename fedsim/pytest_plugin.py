"""fedsim's pytest plugin: run small simulations inside tests, and check what they did.

Installed with fedsim (entry point ``pytest11``), so any project that depends on fedsim has:

* ``fedsim_scenario(base, **changes)``: a scenario file in the test's tmp dir, from a dict, YAML
  text or a path; ``changes`` override dotted keys (``rounds=3``, ``algorithm__lr=0.1``, or a
  dict ``{"algorithm.lr": 0.1}``);
* ``fedsim_run(scenario, mode=..., engine=..., **changes)``: runs it in-process (the ``inline``
  engine unless told otherwise) and returns a ``fedsim.Run`` (also named ``FedsimRun`` here), the
  object ``fedsim.run`` returns: ``rounds`` (rounds.jsonl), ``devices`` (devices.csv rows),
  ``model`` (the final arrays), ``summary``, ``accuracy``, ``out``, ``torch_model()``;
* ``small_scenario(**top_level)``: a valid 5-device, 3-round FedAvg scenario dict to start from;
* ``assert_converges(run, above=0.8, within=10)`` and ``assert_same_run(a, b)``;
* markers ``slow`` and ``firmware``, and ``--fedsim-quick`` to deselect both.

Helpers are importable too: ``from fedsim.pytest_plugin import assert_converges``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import yaml

from fedsim.api import Run
from fedsim.core.scenario_load import merged_data, with_changes

__all__ = [
    "FedsimRun",
    "Run",
    "assert_converges",
    "assert_same_run",
    "small_scenario",
    "with_changes",
]

Mode = Literal["cohort", "per-device"]
ScenarioLike = Mapping[str, Any] | str | Path
# columns a real device fills in from its own clock: they differ between any two runs
MEASURED = ("measured_s", "measured_mj")


def small_scenario(**top_level: Any) -> dict[str, Any]:
    """A valid small scenario (5 devices of two profiles, non-IID digits, FedAvg, 3 rounds)."""
    base: dict[str, Any] = {
        "name": "small",
        "seed": 1,
        "task": {"dataset": "digits", "model": "mlp"},
        "fleet": {
            "groups": [{"profile": "rpi4", "count": 3}, {"profile": "pico", "count": 2}],
            "partition": {"kind": "dirichlet", "alpha": 1.0},
        },
        "algorithm": {"kind": "fedavg", "lr": 0.1, "local_epochs": 1, "batch_size": 16},
        "rounds": 3,
        "execution": {"engine": "inline"},
    }
    base.update(top_level)
    return base


def _as_dict(scenario: ScenarioLike) -> dict[str, Any]:
    if isinstance(scenario, Mapping):
        return dict(scenario)
    text = str(scenario)
    if isinstance(scenario, Path) or ("\n" not in text and text.endswith((".yaml", ".yml"))):
        return merged_data(scenario)  # extends resolved, paths absolute: it can move to tmp
    return dict(yaml.safe_load(text))


FedsimRun = Run  # the name this plugin gave it first; the same class as ``fedsim.Run``


def assert_converges(
    run: FedsimRun, above: float, within: int | None = None, metric: str = "accuracy"
) -> int:
    """``metric`` (a rounds.jsonl column) exceeds ``above`` by round ``within`` (default: the
    last); returns the first round that did. The failure message shows the curve."""
    curve = [(r["round"], r.get(metric)) for r in run.rounds]
    limit = within if within is not None else len(curve)
    for round_, value in curve:
        if round_ > limit:
            break
        if value is not None and value > above:
            return int(round_)
    shown = ", ".join(f"{r}: {'-' if v is None else f'{v:.4g}'}" for r, v in curve)
    raise AssertionError(
        f"{metric} never rose above {above} within {limit} rounds ({run.out}); curve {shown}"
    )


def assert_same_run(
    a: FedsimRun, b: FedsimRun, rtol: float = 0.0, atol: float = 0.0, model: bool = True
) -> None:
    """Two runs gave the same rounds, per-device records and (``model``) final arrays: exactly,
    or to ``rtol``/``atol`` for numbers. Device-measured columns are not compared."""
    assert len(a.rounds) == len(b.rounds), f"{len(a.rounds)} rounds vs {len(b.rounds)}"
    for ra, rb in zip(a.rounds, b.rounds, strict=True):
        _same_record(ra, rb, f"round {ra['round']}", rtol, atol)
    assert len(a.devices) == len(b.devices), f"{len(a.devices)} device rows vs {len(b.devices)}"
    for da, db in zip(a.devices, b.devices, strict=True):
        where = f"round {da['round']}, device {da['device_id']}"
        _same_record(
            {k: _number(v) for k, v in da.items() if k not in MEASURED},
            {k: _number(v) for k, v in db.items() if k not in MEASURED},
            where,
            rtol,
            atol,
        )
    if model:
        assert a.model.keys() == b.model.keys(), "the models have different tensors"
        for name, value in a.model.items():
            np.testing.assert_allclose(b.model[name], value, rtol=rtol, atol=atol, err_msg=name)


def _number(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def _same_record(
    a: Mapping[str, Any], b: Mapping[str, Any], where: str, rtol: float, atol: float
) -> None:
    assert a.keys() == b.keys(), f"{where}: columns differ"
    for key, value in a.items():
        other = b[key]
        if isinstance(value, float) and isinstance(other, float):
            if np.isnan(value) and np.isnan(other):
                continue
            close = abs(value - other) <= atol + rtol * abs(other)
            assert close, f"{where}: {key} {value!r} vs {other!r}"
        else:
            assert value == other, f"{where}: {key} {value!r} vs {other!r}"


# -- the pytest side ------------------------------------------------------------------------------
def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fedsim")
    group.addoption(
        "--fedsim-quick",
        action="store_true",
        help="deselect tests marked slow or firmware",
    )


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    config.addinivalue_line("markers", "slow: long simulations (deselected by --fedsim-quick)")
    config.addinivalue_line(
        "markers", "firmware: needs the C firmware toolchain (deselected by --fedsim-quick)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--fedsim-quick"):
        return
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        quick = not (item.get_closest_marker("slow") or item.get_closest_marker("firmware"))
        (kept if quick else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture
def fedsim_scenario(tmp_path: Path) -> Callable[..., Path]:
    """Write a scenario into the test's tmp dir: ``fedsim_scenario(base, **changes)``."""
    counter = iter(range(1_000_000))

    def write(
        base: ScenarioLike | None = None,
        changes: Mapping[str, Any] | None = None,
        **dotted: Any,
    ) -> Path:
        data = with_changes(_as_dict(base or small_scenario()), {**(changes or {}), **dotted})
        path = tmp_path / f"scenario-{next(counter)}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return path

    return write


@pytest.fixture
def fedsim_run(tmp_path: Path, fedsim_scenario: Callable[..., Path]) -> Callable[..., FedsimRun]:
    """Run a scenario in-process: ``fedsim_run(scenario, mode="cohort", engine="inline",
    **changes)`` → ``fedsim.Run``. Each call gets its own results folder."""
    from fedsim.api import run

    counter = iter(range(1_000_000))

    def go(
        scenario: ScenarioLike | None = None,
        mode: Mode | None = None,
        engine: Literal["inline", "ray", "auto"] = "inline",
        changes: Mapping[str, Any] | None = None,
        **dotted: Any,
    ) -> FedsimRun:
        extra = dict(changes or {}, **dotted)
        if mode is not None:
            extra["execution.mode"] = mode
        path = fedsim_scenario(scenario, extra)
        out = tmp_path / f"run-{next(counter)}"
        return run(path, out=out, engine=engine)

    return go
