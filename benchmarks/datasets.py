"""Generation and caching time per dataset: a cold load (empty cache) vs a warm one (cached).

Each load runs in a fresh process (so nothing is cached in memory), with ``FEDSIM_CACHE``
pointing at a temporary folder that starts empty.

    .venv/bin/python -m benchmarks.datasets [NAME ...]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import json, sys, time
t = time.perf_counter()
from fedsim.core.data import load_task_data
data = load_task_data(sys.argv[1], 0)
n = len(data.y_train) if not data.generated else 0
print(json.dumps({"s": time.perf_counter() - t, "train": n, "test": len(data.y_test)}))
"""


def _load(name: str, cache: Path) -> dict[str, float]:
    env = {**os.environ, "FEDSIM_CACHE": str(cache), "FLWR_TELEMETRY_ENABLED": "0"}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, name], env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        return {"error": 1.0, "wall": time.perf_counter() - started}
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    from fedsim.core.data import DATASETS

    names = sys.argv[1:] or DATASETS.names()
    print("| dataset | cold load s | warm load s | cold / warm | cache MB | train | test |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in names:
        with tempfile.TemporaryDirectory() as tmp:
            cache = Path(tmp)
            cold, warm = _load(name, cache), _load(name, cache)
            size = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) / 1e6
        if "error" in cold or "error" in warm:
            print(f"| {name} | failed | | | | | |")
            continue
        print(
            f"| {name} | {cold['s']:.2f} | {warm['s']:.2f} | {cold['s'] / warm['s']:.1f}× "
            f"| {size:.1f} | {int(cold['train']):,} | {int(cold['test']):,} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
