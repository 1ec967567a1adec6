"""The local Ray that a `ray` run starts is lean, a named cluster is left as it is, and
``engine: auto`` switches to Ray at its measured break-even (issue 27)."""

from __future__ import annotations

import os
from contextlib import nullcontext

import psutil
import pytest

from fedsim.core.scenario import AUTO_RAY_MIN_DEVICE_ROUNDS, Scenario, choose_engine
from fedsim.runner import lean_ray_params, ray_start
from tests.conftest import tiny_scenario


def test_the_local_node_leaves_out_what_a_simulation_does_not_need() -> None:
    from ray._private.parameter import RayParams

    params = lean_ray_params(3)

    assert params == {
        "num_cpus": 3,  # one per actor
        "num_gpus": 0,
        "include_dashboard": False,
        "no_monitor": True,
        "include_log_monitor": False,
    }
    ray_params = RayParams(**params)  # this Ray still takes them (else the runner's fallback)
    assert ray_params.no_monitor
    assert not ray_params.include_log_monitor


def test_a_named_cluster_gets_none_of_the_local_settings() -> None:
    assert isinstance(ray_start("10.0.0.5:6379", 4), nullcontext)
    assert not isinstance(ray_start(None, 4), nullcontext)  # a local Ray (not entered here)


def _ray_processes() -> list[str]:
    names = []
    for proc in psutil.Process().children(recursive=True):
        try:
            names.append(" ".join(proc.cmdline()))
        except psutil.Error:
            continue
    return names


@pytest.mark.slow
def test_the_local_ray_runs_no_monitors_and_no_job_runtime_env_and_stops_after() -> None:
    import ray

    with ray_start(None, 1):
        running = _ray_processes()
        runtime_env = ray.get_runtime_context().runtime_env
        cpus = ray.cluster_resources().get("CPU")  # type: ignore[no-untyped-call]

    assert cpus == 1
    assert any("gcs_server" in cmd for cmd in running)
    assert not [cmd for cmd in running if "monitor.py" in cmd]  # autoscaler and log monitors
    assert not runtime_env  # the workers Ray prestarts can serve the actors
    assert not ray.is_initialized()
    left = [cmd for cmd in _ray_processes() if "gcs_server" in cmd or "raylet" in cmd]
    assert not left


@pytest.mark.parametrize(
    ("device_rounds", "expected"),
    [(AUTO_RAY_MIN_DEVICE_ROUNDS - 100, "inline"), (AUTO_RAY_MIN_DEVICE_ROUNDS, "ray")],
)
def test_auto_switches_to_ray_at_the_measured_break_even(
    device_rounds: int, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    devices = 100  # every device every round
    assert device_rounds % devices == 0
    scenario = Scenario.model_validate(
        tiny_scenario(
            fleet={"groups": [{"profile": "rpi4", "count": devices}]},
            rounds=device_rounds // devices,
            execution={"engine": "auto"},
        )
    )

    assert scenario.cohort_size * scenario.rounds == device_rounds
    assert choose_engine(scenario) == expected


def test_a_local_ray_that_cannot_start_is_a_located_error_and_pythonpath_is_restored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import fedsim.runner
    from fedsim.core.errors import FedsimError

    def no_room(cpus: int) -> None:
        raise OSError(28, "No space left on device: '/tmp/ray'")

    monkeypatch.setattr(fedsim.runner, "_start_node", no_room)
    monkeypatch.setenv("PYTHONPATH", "/somewhere")

    with pytest.raises(FedsimError) as caught, ray_start(None, 2):
        pass

    assert caught.value.where == "execution.engine"
    assert "could not start a local Ray: OSError" in caught.value.what
    assert "--engine inline" in caught.value.fix
    assert os.environ["PYTHONPATH"] == "/somewhere"  # as it was: a second run must not grow it
