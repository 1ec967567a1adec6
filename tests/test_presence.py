"""The presence room simulator: determinism, physical ranges, CO2 mass balance, drift, learning."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedsim.core.datasets import presence
from fedsim.core.datasets.presence import Drift, RoomTrace, simulate_room

UCI_COLUMNS = ("Temperature", "Humidity", "Light", "CO2", "HumidityRatio", "Occupancy")


@pytest.fixture(scope="module")
def week() -> list[RoomTrace]:
    """Six rooms of one building, one February week each."""
    return [simulate_room(room, seed=0, days=7) for room in range(6)]


def assert_same(a: RoomTrace, b: RoomTrace) -> None:
    for name, column in a.columns().items():
        np.testing.assert_array_equal(column, b.columns()[name], err_msg=name)


def test_a_room_is_a_pure_function_of_its_arguments() -> None:
    assert_same(simulate_room(3, seed=7, days=2), simulate_room(3, seed=7, days=2))


def test_a_shorter_run_is_a_prefix_of_a_longer_one() -> None:
    short, long = simulate_room(1, seed=5, days=2), simulate_room(1, seed=5, days=4)

    for name, column in short.columns().items():
        np.testing.assert_array_equal(column, long.columns()[name][: len(column)], err_msg=name)


def test_rooms_and_seeds_differ() -> None:
    base = simulate_room(0, seed=0, days=1)
    other_room, other_seed = simulate_room(1, seed=0, days=1), simulate_room(0, seed=1, days=1)

    assert base.params != other_room.params
    assert base.params != other_seed.params
    assert not np.array_equal(base.co2_ppm, other_room.co2_ppm)
    assert not np.array_equal(base.co2_ppm, other_seed.co2_ppm)
    # one building: rooms share the weather, seeds do not
    np.testing.assert_array_equal(base.outdoor_c, other_room.outdoor_c)
    assert not np.array_equal(base.outdoor_c, other_seed.outdoor_c)


def test_the_columns_are_uci_occupancys(week: list[RoomTrace]) -> None:
    trace = week[0]
    columns = trace.columns()

    assert tuple(columns) == UCI_COLUMNS
    assert all(c.dtype == np.float32 and c.shape == (7 * 1440,) for c in columns.values())
    assert trace.timestamps[0] == np.datetime64("2015-02-02T00:00")  # day 33, as UCI's data
    assert (np.diff(trace.timestamps) == np.timedelta64(1, "m")).all()
    assert set(np.unique(trace.occupancy).tolist()) == {0.0, 1.0}


def test_a_february_week_stays_within_physical_ranges(week: list[RoomTrace]) -> None:
    def pooled(name: str) -> np.ndarray:
        return np.concatenate([t.columns()[name] for t in week])

    rates = [float(t.occupancy.mean()) for t in week]
    co2, light, humidity = pooled("CO2"), pooled("Light"), pooled("Humidity")

    assert 0.2 <= float(np.mean(rates)) <= 0.3  # office hours, lunch, absences, weekends
    assert all(0.12 <= r <= 0.4 for r in rates)
    assert np.percentile(co2, 1) >= 370.0
    assert co2.max() <= 2000.0
    assert light.min() >= 0.0
    assert np.percentile(light, 99.9) <= 1500.0
    assert 15.0 <= np.percentile(humidity, 1) < np.percentile(humidity, 99) <= 70.0
    assert 15.0 <= pooled("Temperature").min() < pooled("Temperature").max() <= 28.0


@pytest.mark.parametrize(
    ("t_c", "rh_pct", "ratio"), [(20.0, 50.0, 0.00726), (25.0, 60.0, 0.01186), (0.0, 80.0, 0.00301)]
)
def test_the_humidity_ratio_matches_psychrometric_tables(
    t_c: float, rh_pct: float, ratio: float
) -> None:
    got = float(presence._ratio(np.array(t_c), np.array(rh_pct)))

    assert got == pytest.approx(ratio, rel=0.02)
    assert float(presence._rh(np.array(t_c), np.array(got))) == pytest.approx(rh_pct)


def test_co2_follows_the_mass_balance(week: list[RoomTrace]) -> None:
    """Oracle: dC/dt = G·n/V + (Q/V)(C_out − C) integrated in 1 s Euler steps over a workday."""
    trace = week[2]
    volume, start = trace.params.volume_m3, 1440  # Tuesday
    co2 = float(trace.co2_true_ppm[start - 1])
    for minute in range(start, start + 1440):
        n, rate = int(trace.occupants[minute]), float(trace.ach_per_h[minute]) / 3600.0
        for _ in range(60):
            co2 += 5e-6 * n * 1e6 / volume + rate * (420.0 - co2)
        assert co2 == pytest.approx(float(trace.co2_true_ppm[minute]), abs=1.0)


def test_co2_rises_when_occupied_and_decays_when_empty(week: list[RoomTrace]) -> None:
    arrivals = departures = 0
    for trace in week:
        occupied, c = trace.occupancy > 0, trace.co2_true_ppm.astype(np.float64)
        changes = np.flatnonzero(np.diff(occupied.astype(int))) + 1
        for t in changes:
            if t < 60 or t + 60 > len(c):
                continue
            if occupied[t : t + 60].all() and not occupied[t - 30 : t].any():  # CO2 climbs
                assert c[t + 59] > c[t - 1] + 30.0
                arrivals += 1
            elif not occupied[t : t + 60].any():  # an hour empty: the excess decays exponentially
                expected = (c[t - 1] - 420.0) * math.exp(-trace.ach_per_h[t : t + 60].sum() / 60.0)
                assert c[t + 59] - 420.0 == pytest.approx(expected, rel=1e-3)
                departures += 1
        readings = trace.co2_ppm
        assert readings[occupied].mean() > readings[~occupied].mean() + 80.0
    assert arrivals >= 10
    assert departures >= 10


def test_lamps_light_occupied_dark_rooms(week: list[RoomTrace]) -> None:
    for trace in week:
        hour = (trace.timestamps.astype("datetime64[m]").astype(np.int64) // 60) % 24
        dark = (hour < 7) | (hour >= 18)
        occupied = trace.occupancy > 0

        if (dark & occupied).sum() > 30:
            lamp = trace.params.lamp_lux * trace.params.light_gain
            assert np.median(trace.light_lux[dark & occupied]) > 0.8 * lamp
        assert np.median(trace.light_lux[dark & ~occupied]) < 5.0


def test_sensor_ageing_drifts_only_its_own_column() -> None:
    base = simulate_room(4, seed=2, days=7)
    co2_aged = simulate_room(4, seed=2, days=7, drift=Drift(co2_ppm_per_day=5.0))
    light_aged = simulate_room(4, seed=2, days=7, drift=Drift(light_gain_per_day=0.01))
    age_days = np.arange(7 * 1440) / 1440

    # same noise draws: the difference is the drift, up to 1 ppm of quantisation
    np.testing.assert_allclose(co2_aged.co2_ppm - base.co2_ppm, 5.0 * age_days, atol=1.01)
    np.testing.assert_array_equal(co2_aged.temperature_c, base.temperature_c)
    np.testing.assert_array_equal(co2_aged.light_lux, base.light_lux)
    last_day_bright = (age_days >= 6) & (base.light_lux > 200)
    gain = light_aged.light_lux[last_day_bright] / base.light_lux[last_day_bright]
    assert float(np.median(gain)) == pytest.approx(1.0 + 0.01 * 6.5, abs=0.01)


def test_the_season_moves_weather_and_daylight() -> None:
    winter = simulate_room(0, seed=1, days=7)
    summer = simulate_room(0, seed=1, days=7, drift=Drift(start_day_of_year=200))

    def daylit_empty(trace: RoomTrace) -> float:
        return float((trace.light_lux[trace.occupancy == 0] > 20).mean())

    assert summer.timestamps[0] == np.datetime64("2015-07-19T00:00")
    assert summer.outdoor_c.mean() > winter.outdoor_c.mean() + 8.0
    assert daylit_empty(summer) > daylit_empty(winter) + 0.1  # longer days
    assert summer.humidity_ratio.mean() > winter.humidity_ratio.mean()  # warm air holds more


@pytest.mark.parametrize(
    ("drift", "message"),
    [
        (dict(start_day_of_year=0), "start_day_of_year must be 1..365, got 0"),
        (dict(light_gain_per_day=0.5), r"light_gain_per_day must be within ±0.01, got 0.5"),
    ],
)
def test_drift_rejects_impossible_values(drift: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Drift(**drift)  # type: ignore[arg-type]


def test_features_stack_consecutive_minutes_oldest_first(week: list[RoomTrace]) -> None:
    trace = week[1]
    x, y = presence.features(trace, window=3)
    values = np.stack([trace.columns()[c] for c in presence.COLUMNS], axis=1)

    assert x.shape == (7 * 1440 - 2, 15)
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x[100], values[100:103].reshape(-1))
    np.testing.assert_array_equal(y, trace.occupancy[2:].astype(np.int64))


def test_load_task_pools_rooms_and_tests_on_the_second_week() -> None:
    task = presence.load_task(seed=0)
    n = presence.DEFAULT_ROOMS * 7 * 1440
    assert task.groups_train is not None
    assert task.groups_test is not None

    assert task.x_train.shape == (n, 5)
    assert task.x_test.shape == (n, 5)
    assert task.x_train.dtype == np.float32
    assert task.y_train.dtype == np.int64
    assert set(task.groups_train.tolist()) == set(range(presence.DEFAULT_ROOMS))
    assert task.group_kind == "room"
    assert task.class_names == ("empty", "occupied")
    assert abs(float(task.x_train.mean())) < 3.0  # scaled by fixed physical constants


def test_a_logistic_regression_detects_presence_far_better_than_the_majority() -> None:
    from sklearn.linear_model import LogisticRegression

    task = presence.load_task(seed=1)
    model = LogisticRegression(max_iter=1000).fit(task.x_train, task.y_train)
    majority = max(float(task.y_test.mean()), 1.0 - float(task.y_test.mean()))

    assert model.score(task.x_test, task.y_test) > majority + 0.15


def test_a_window_of_minutes_widens_each_sample() -> None:
    task = presence.presence_task(seed=0, rooms=2, days=2, window=5)

    assert task.sample_shape == (25,)
    assert len(task.y_train) == 2 * (1440 - 4)
    assert len(task.y_test) == 2 * 1440
