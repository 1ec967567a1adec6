"""The device cost model: memory fit, compute, links, energy, availability (invariants, oracles)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from torch import nn

from devices.availability import AlwaysOn, MarkovOnOff, TraceError, read_trace
from devices.clock import DevicePlan
from devices.cost import (
    Activity,
    CyclesPerMac,
    Messages,
    PowerTimesTime,
    SramFit,
    cost_model,
    head_sram_bytes,
)
from devices.footprint import footprint, head_parameters
from fedsim.core.errors import FedsimError
from fedsim.core.payload import payload_bytes, round_trip
from fedsim.core.profiles import DeviceProfile, LinkPower, LinkType


def _profile(**changes: object) -> DeviceProfile:
    figures: dict[str, object] = {
        "name": "board",
        "label": "Board",
        "board": "Board",
        "soc": "SoC",
        "core": "Cortex-M4F",
        "cores": 1,
        "clock_mhz": 100.0,
        "sram_bytes": 64 * 1024,
        "flash_bytes": 1024 * 1024,
        "fpu": True,
        "source": "test",
        "links": (LinkPower(kind="ble", tx_mw=20.0, rx_mw=10.0, source="test"),),
        "active_mw": 50.0,
        "idle_mw": 2.0,
        "power_source": "test",
        "cycles_per_mac": 4.0,
        "cycles_source": "test",
    }
    return DeviceProfile.model_validate({**figures, **changes})


BLE = LinkType(
    kind="ble", label="BLE", throughput_bps=800_000, latency_s=0.03, mtu_bytes=244, source="t"
)


def test_compute_time_is_macs_times_cycles_over_clock() -> None:
    seconds = CyclesPerMac().seconds(_profile(), 1_000_000)

    assert seconds == pytest.approx(1_000_000 * 4.0 / 100e6)  # 0.04 s
    soft = CyclesPerMac().seconds(_profile(fpu=False, cycles_per_mac=130.0), 1_000_000)
    assert soft / seconds == pytest.approx(130 / 4)


def test_link_time_grows_with_payload_and_pays_latency_per_message() -> None:
    link = Messages()
    times = [link.seconds(BLE, n) for n in (0, 1, 244, 245, 10_000, 100_000)]

    assert times == sorted(times)
    assert len(set(times)) == len(times)
    assert times[0] == 0.0
    assert times[2] == pytest.approx(0.03 + 244 * 8 / 800_000)  # one message
    assert times[3] == pytest.approx(2 * 0.03 + 245 * 8 / 800_000)  # split in two


def test_float16_payload_is_half_of_float32() -> None:
    shapes = [(784, 32), (32,), (10, 32), (10,)]

    full = payload_bytes(shapes, "float32")
    assert full == (784 * 32 + 32 + 320 + 10) * 4
    assert payload_bytes(shapes, "float16") * 2 == full
    assert payload_bytes(shapes, "float16", [False, False, True, True]) == (320 + 10) * 2


def test_float16_round_trip_rounds_like_the_wire() -> None:
    arrays = [np.array([1.0, 1.0 + 2**-12, 65504.0], dtype=np.float32)]

    assert round_trip(arrays, "float32") is arrays
    assert round_trip(arrays, "float16")[0].tolist() == [1.0, 1.0, 65504.0]


def test_energy_is_power_times_time_per_activity() -> None:
    p = _profile()
    link = p.links[0]
    activity = Activity(compute_s=2.0, down_s=1.0, up_s=0.5, idle_s=10.0)

    mj = PowerTimesTime().millijoules(p, link, activity)

    assert mj == pytest.approx(50 * 2 + (2 + 10) * 1 + (2 + 20) * 0.5 + 2 * 10)


def test_a_memory_skipped_device_spends_idle_energy_only() -> None:
    plan = DevicePlan(3, "memory-skip", "skip", 0, 0, 0.0, 0.0, 0.0)
    p = _profile()

    activity = plan.activity(round_s=12.5, delivered=False)
    mj = PowerTimesTime().millijoules(p, p.links[0], activity)

    assert activity == Activity(idle_s=12.5)
    assert mj == pytest.approx(p.idle_mw * 12.5)


def test_a_straggler_is_cut_at_the_deadline_and_a_dropout_is_off_after_dropping() -> None:
    straggler = DevicePlan(1, "straggler", "full", 100, 0, 2.0, 10.0, 1.0, stop_s=5.0)
    dropout = DevicePlan(2, "dropout", "full", 100, 0, 2.0, 10.0, 1.0, stop_s=4.0)

    assert straggler.activity(5.0, False) == Activity(compute_s=3.0, down_s=2.0)
    assert dropout.activity(9.0, False) == Activity(compute_s=2.0, down_s=2.0, idle_s=0.0)


def _mlp(features: int = 784) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(features, 32), nn.ReLU(), nn.Linear(32, 10))


def test_memory_fit_full_then_head_then_skip() -> None:
    model = _mlp()
    full = footprint(model, (784,), 16)
    head = footprint(model, (784,), 16, head_parameters(model))
    fit = SramFit()
    # head-only: the frozen first layer stays in flash; the head, its gradient and its input
    # (16 × 32 floats) sit in SRAM
    assert head_sram_bytes(head) == (330 + 330 + 16 * 32) * 4

    big = _profile(sram_bytes=full.train_bytes)
    small = _profile(sram_bytes=full.train_bytes - 1)
    tiny = _profile(sram_bytes=head_sram_bytes(head) - 1)
    no_flash = _profile(flash_bytes=full.weight_bytes - 1, sram_bytes=1 << 30)

    assert fit.scope(big, full, head, "skip") == "full"
    assert fit.scope(small, full, head, "skip") == "skip"
    assert fit.scope(small, full, head, "head-only") == "head"
    assert fit.scope(tiny, full, head, "head-only") == "skip"
    assert fit.scope(no_flash, full, head, "head-only") == "skip"


def test_fake_cost_model_is_round_numbers() -> None:
    fake = cost_model("fake")

    assert fake.compute.seconds(_profile(), 2_000_000) == pytest.approx(2.0)
    assert fake.link.seconds(BLE, 1000) == pytest.approx(0.101)
    assert fake.energy.millijoules(_profile(), None, Activity(1, 1, 1, 1000)) == pytest.approx(4)


def test_unknown_cost_model_suggests_the_closest() -> None:
    with pytest.raises(FedsimError, match=r"unknown cost model 'datasheets'.*'datasheet'"):
        cost_model("datasheets")


# --- availability ---------------------------------------------------------------------------


def test_always_on() -> None:
    on, until = AlwaysOn().online(np.arange(3), 1e9)

    assert on.all()
    assert np.isinf(until).all()


def test_markov_availability_is_seeded_and_independent_of_query_order() -> None:
    ids = np.arange(200)
    a, b = MarkovOnOff(7, 600.0, 300.0), MarkovOnOff(7, 600.0, 300.0)

    answers_a = [a.online(ids, t) for t in (0.0, 100.0, 5000.0)]
    b.online(ids[::-1], 3000.0)  # b is asked other things first, in another order
    answers_b = [b.online(ids, t) for t in (0.0, 100.0, 5000.0)]

    for (on_a, until_a), (on_b, until_b) in zip(answers_a, answers_b, strict=True):
        assert np.array_equal(on_a, on_b)
        assert np.array_equal(until_a, until_b, equal_nan=True)
    other = MarkovOnOff(8, 600.0, 300.0).online(ids, 5000.0)[0]
    assert not np.array_equal(other, answers_a[2][0])


def test_markov_availability_has_the_stationary_share_and_consistent_spells() -> None:
    chain = MarkovOnOff(0, 600.0, 300.0)
    ids = np.arange(20_000)

    on, until = chain.online(ids, 10_000.0)

    assert on.mean() == pytest.approx(600 / 900, abs=0.02)
    assert (until[on] > 10_000.0).all()
    assert np.isnan(until[~on]).all()
    # memoryless: the rest of an online spell is Exp(mean_on) again
    assert (until[on] - 10_000.0).mean() == pytest.approx(600.0, rel=0.05)
    later_on, _ = chain.online(ids, 10_000.0 + 1.0)
    stays = until > 10_001.0
    assert (later_on[on & stays]).all()  # online until its spell ends


def test_trace_availability(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text("device,start,end\n3,0,100\n3,50,150\n4,200,300\n")

    t = read_trace(trace, "x", range(3, 6))
    on, until = t.online(np.array([3, 4, 5]), 120.0)

    assert on.tolist() == [True, False, False]  # overlapping spans merge; 5 is never online
    assert until[0] == 150.0
    assert t.online(np.array([4]), 300.0)[0].tolist() == [False]  # end is exclusive


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("dev,start,end\n", r"trace.csv:1: expected a trace: a CSV whose first line is device,"),
        ("device,start,end\n3,0,x\n", r"trace.csv:2: cannot read .*integer device id"),
        ("device,start,end\n3,10,5\n", r"trace.csv:2: interval \[10.0, 5.0\) is empty"),
        ("device,start,end\n3,0,5\n9,0,5\n", r"trace.csv:3: device 9 is not in this group"),
    ],
)
def test_bad_traces_name_the_file_and_line(tmp_path: Path, text: str, match: str) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text(text)

    with pytest.raises(TraceError, match=match):
        read_trace(trace, "x", range(3, 6))


def test_missing_trace_file_names_the_scenario_key(tmp_path: Path) -> None:
    with pytest.raises(FedsimError, match=r"^fleet.groups\[0\].availability.file: no trace"):
        read_trace(tmp_path / "nope.csv", "fleet.groups[0].availability.file", range(3))


def test_until_is_infinite_only_when_always_on() -> None:
    _, until = MarkovOnOff(1, 1.0, 1.0).online(np.arange(50), 0.0)

    assert not math.isinf(float(np.nanmax(until)))


def test_next_online_is_now_for_online_devices_and_the_next_on_spell_for_the_others() -> None:
    """What the asynchronous server waits for: for a device offline at t, the first moment it is
    online again (just after it the device is online; just before it, not)."""
    from devices.availability import Trace

    ids = np.arange(40)
    chain = MarkovOnOff(3, 5.0, 5.0)
    on, _ = chain.online(ids, 10.0)
    wake = chain.next_online(ids, 10.0)
    assert np.all(wake[on] == 10.0)
    assert np.all(wake[~on] > 10.0)
    for d, t in zip(ids[~on], wake[~on], strict=True):
        assert not chain.online(np.array([d]), float(np.nextafter(t, 0)))[0][0]
        assert chain.online(np.array([d]), float(np.nextafter(t, np.inf)))[0][0]
    trace = Trace({0: [(1.0, 2.0), (5.0, 6.0)], 1: [(0.0, 9.0)]})
    assert trace.next_online(np.array([0, 1, 2]), 3.0).tolist() == [5.0, 3.0, np.inf]
    assert trace.next_online(np.array([0]), 7.0).tolist() == [np.inf]
    assert AlwaysOn().next_online(np.array([0, 1]), 4.0).tolist() == [4.0, 4.0]
