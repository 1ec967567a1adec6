"""DeviceStateStore at fleet scale, against pickling every device's state each round.

Run from the repository root: ``python -m benchmarks.state_store``. A round here samples 1,000 of
100,000 devices: the store reads and writes those rows only, the naive way pickles the whole fleet.
"""

from __future__ import annotations

import pickle
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fedsim.core.state import DeviceState, DeviceStateStore

N_DEVICES = 100_000
N_SAMPLED = 1_000  # devices a round touches
REPEATS = 3  # short timings: best of this many


def device_state(rng: np.random.Generator, device_id: int) -> DeviceState:
    """A realistic small state: a prototype, a stream position and a PCG64 RNG state."""
    return {
        "prototype": rng.standard_normal(64, dtype=np.float32),
        "stream_pos": np.array(device_id * 10, dtype=np.int64),
        "rng": rng.integers(0, 2**63, size=4, dtype=np.uint64),
    }


def best_s(fn: Callable[[], object], repeats: int = REPEATS) -> float:
    """The fastest of ``repeats`` calls, in seconds (the others include noise, not work)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    rng = np.random.default_rng(0)
    states = {i: device_state(rng, i) for i in range(N_DEVICES)}
    sampled = rng.choice(N_DEVICES, size=N_SAMPLED, replace=False).tolist()
    sampled_states = {i: states[i] for i in sampled}

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.sqlite"
        with DeviceStateStore(path) as store:
            put_all_s = best_s(lambda: store.put_many(states), repeats=1)
            get_many_s = best_s(lambda: store.get_many(sampled))
            get_one_s = best_s(lambda: [store.get(i) for i in sampled])
            put_sampled_s = best_s(lambda: store.put_many(sampled_states))
        size_mb = path.stat().st_size / 1e6  # after close: the WAL is checkpointed into the file

    blob = pickle.dumps(states, protocol=pickle.HIGHEST_PROTOCOL)
    dumps_s = best_s(lambda: pickle.dumps(states, protocol=pickle.HIGHEST_PROTOCOL))
    loads_s = best_s(lambda: pickle.loads(blob))
    store_round_s = get_many_s + put_sampled_s
    naive_round_s = dumps_s + loads_s

    print(f"{N_DEVICES:,} devices; state: float32[64] + int64 + uint64[4]; round = {N_SAMPLED:,}")
    print()
    print("| operation | time (s) | note |")
    print("|---|---:|---|")
    print(f"| store put_many, all devices | {put_all_s:.3f} | one transaction |")
    print(f"| store get_many, {N_SAMPLED:,} random ids | {get_many_s:.4f} | |")
    print(f"| store get, {N_SAMPLED:,} ids one by one | {get_one_s:.4f} | |")
    print(f"| store put_many, {N_SAMPLED:,} ids | {put_sampled_s:.4f} | a round's write-back |")
    print(f"| store round (get_many + put_many) | {store_round_s:.4f} | |")
    print(f"| naive pickle.dumps, whole fleet | {dumps_s:.3f} | {len(blob) / 1e6:.1f} MB |")
    print(f"| naive pickle.loads, whole fleet | {loads_s:.3f} | |")
    print(f"| naive round (dumps + loads) | {naive_round_s:.3f} | |")
    print()
    print(f"store file on disk: {size_mb:.1f} MB")
    print(f"naive round / store round: {naive_round_s / store_round_s:.1f}x")


if __name__ == "__main__":
    main()
