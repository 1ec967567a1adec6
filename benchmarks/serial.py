"""The serial bridge (issue 10, design §9, §12): what framing costs, and how fast each device
answers.

* **Framing efficiency** of a weight transfer (LOAD_WEIGHTS then GET_WEIGHTS of a whole head):
  the weight bytes over every byte on the wire both ways (headers, COBS, CRC, delimiters, the
  chunks' configuration and offsets, the replies). On a UART at 115200 baud (8N1, 10 bits a byte)
  that is the share of the raw line rate the weights get; the design's target is ≥ 80%.
* **Round trips** (HELLO, median and 95th percentile of ``--requests``) and **throughput** (TRAIN
  frames of 30 samples × 16 features, samples per second and payload KB/s) for the Python agent on
  a socat pty pair, the C firmware on a host pty, and the C firmware on an emulated Cortex-M4F in
  QEMU (UART on TCP, ``nodelay=on``); the ratio to the host pty in the same run.
* **Boot to HELLO** of the emulated MCU (median of ``--boots``).
* **Instructions per on-device SGD step** (16 × 4 softmax head) under
  ``-icount shift=0,align=off,sleep=off``: a deterministic figure to track (``bench.elf``), and
  the whole device path per TRAIN sample (COBS, CRC, parse, step, reply).

    .venv/bin/python -m benchmarks.serial [--requests 300] [--boots 5] [--out results/bench-serial]

Prints a table and writes ``<out>/serial.md``.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks import publish
from edge.agent import Device, serve
from edge.bridge import SerialBridge
from edge.emulator import FIRMWARE, build_firmware, host_firmware, qemu_command, qemu_mcu
from edge.messages import HeadConfig
from edge.protocol import MessageType

ROOT = Path(__file__).resolve().parents[1]
BAUD = 115200
TRAIN = HeadConfig(outputs=4, features=16, lr=0.05)


@contextmanager
def _agent() -> Iterator[str]:
    """The Python agent on the far end of a socat pty pair; yields the near end."""
    import serial

    proc = subprocess.Popen(
        ["socat", "-d", "-d", "pty,raw,echo=0", "pty,raw,echo=0"], stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    ptys: list[str] = []
    while len(ptys) < 2:
        match = re.search(r"PTY is (\S+)", proc.stderr.readline())
        if match:
            ptys.append(match[1])
    link = serial.serial_for_url(ptys[1], timeout=0.02)
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(link, Device(), stop), daemon=True)
    thread.start()
    try:
        yield ptys[0]
    finally:
        stop.set()
        thread.join(5)
        link.close()
        proc.terminate()
        proc.wait(5)


@contextmanager
def _c_host() -> Iterator[str]:
    with host_firmware(sanitizers=False) as running:
        yield running.port


@contextmanager
def _qemu() -> Iterator[str]:
    with qemu_mcu() as running:
        yield running.port


@dataclass
class Link:
    name: str
    rtt_median_ms: float
    rtt_p95_ms: float
    samples_per_s: float
    payload_kb_s: float


def _measure(name: str, port: str, requests: int) -> Link:
    rng = np.random.default_rng(0)
    with SerialBridge(port, timeout=2.0) as bridge:
        bridge.hello()
        times = []
        for _ in range(requests):
            start = time.perf_counter()
            bridge.request(MessageType.HELLO)
            times.append(time.perf_counter() - start)
        w = np.zeros((TRAIN.outputs, TRAIN.features), np.float32)
        bridge.load_head(TRAIN, w, np.zeros(TRAIN.outputs, np.float32))
        n = 30 * 40  # 40 TRAIN frames of 30 samples
        x = rng.normal(size=(n, TRAIN.features)).astype(np.float32)
        y = rng.integers(0, TRAIN.outputs, n)
        sent = bridge.stats.payload_sent
        start = time.perf_counter()
        bridge.train(TRAIN, x, y)
        wall = time.perf_counter() - start
        payload = bridge.stats.payload_sent - sent
    ms = sorted(1e3 * t for t in times)
    return Link(
        name,
        statistics.median(ms),
        ms[int(0.95 * (len(ms) - 1))],
        n / wall,
        payload / wall / 1024,
    )


@dataclass
class Efficiency:
    floats: int
    weight_bytes: int
    wire_bytes: int
    frames: int

    @property
    def share(self) -> float:
        return self.weight_bytes / self.wire_bytes

    @property
    def seconds_at_baud(self) -> float:
        return 10 * self.wire_bytes / BAUD


def _efficiency(port: str, config: HeadConfig) -> Efficiency:
    rng = np.random.default_rng(1)
    w = rng.normal(size=(config.outputs, config.features)).astype(np.float32)
    b = rng.normal(size=config.outputs).astype(np.float32)
    with SerialBridge(port) as bridge:
        bridge.hello()
        before = (bridge.stats.bytes_sent, bridge.stats.bytes_received, bridge.stats.requests)
        bridge.load_head(config, w, b)
        got_w, got_b = bridge.get_head(config)
        assert np.array_equal(got_w, w)
        assert np.array_equal(got_b, b)
        wire = bridge.stats.bytes_sent + bridge.stats.bytes_received - before[0] - before[1]
        frames = 2 * (bridge.stats.requests - before[2])
    return Efficiency(config.floats, 2 * 4 * config.floats, wire, frames)


def _icount() -> dict[str, float]:
    build_firmware("qemu")
    elf = FIRMWARE / "build" / "qemu" / "bench.elf"
    command = qemu_command(elf, "stdio", icount=True)  # bench.elf prints on UART0
    command += ["-semihosting-config", "enable=on,target=native"]
    runs = [subprocess.run(command, capture_output=True, text=True, timeout=60) for _ in range(2)]
    text = runs[0].stdout
    step = float(re.search(r"instructions_per_step=([\d.]+)", text)[1])  # type: ignore[index]
    path = float(re.search(r"instructions_per_train_sample=([\d.]+)", text)[1])  # type: ignore[index]
    return {"step": step, "path": path, "deterministic": float(runs[0].stdout == runs[1].stdout)}


def _boots(count: int) -> list[float]:
    times = []
    for _ in range(count):
        with qemu_mcu() as running:
            times.append(running.boot_s)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--boots", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench-serial")
    args = parser.parse_args(argv)

    targets = {"Python agent, socat pty": _agent, "C firmware, host pty": _c_host}
    targets["C firmware, QEMU Cortex-M4F (TCP)"] = _qemu
    links, efficiency = [], []
    for name, start in targets.items():
        print(f"measuring {name} ...", file=sys.stderr, flush=True)
        with start() as port:
            links.append(_measure(name, port, args.requests))
            if name.startswith("C firmware, host"):
                for config in (HeadConfig(10, 64, 0.1), HeadConfig(64, 63, 0.1)):
                    efficiency.append(_efficiency(port, config))
    boots = _boots(args.boots)
    icount = _icount()

    base = next(link for link in links if "host pty" in link.name)
    lines = [
        "## Serial bridge: framing efficiency of a weight transfer (load + read back)",
        "",
        "| head (floats) | weight bytes | bytes on the wire | frames | share of the wire | "
        "time at 115200 baud |",
        "|---|---|---|---|---|---|",
    ]
    for e in efficiency:
        lines.append(
            f"| {e.floats:,} | {e.weight_bytes:,} | {e.wire_bytes:,} | {e.frames} | "
            f"{100 * e.share:.1f}% (target ≥ 80%) | {e.seconds_at_baud:.2f} s |"
        )
    lines += [
        "",
        f"## Round trips and throughput ({args.requests} HELLOs; TRAIN: 1,200 samples of 16 "
        "features in frames of 30)",
        "",
        "| device | HELLO median | p95 | vs host pty | TRAIN samples/s | payload KB/s |",
        "|---|---|---|---|---|---|",
    ]
    for link in links:
        lines.append(
            f"| {link.name} | {link.rtt_median_ms:.3f} ms | {link.rtt_p95_ms:.3f} ms | "
            f"{link.rtt_median_ms / base.rtt_median_ms:.1f}× | {link.samples_per_s:,.0f} | "
            f"{link.payload_kb_s:,.1f} |"
        )
    lines += [
        f"| (UART at {BAUD} baud, for scale) | | | | "
        f"{BAUD / 10 / (2 + 30 * 68) * 30:,.0f} | {BAUD / 10 / 1024:.1f} |",
        "",
        "## Emulated MCU (QEMU mps2-an386, Cortex-M4F)",
        "",
        f"- boot to first HELLO reply: median {statistics.median(boots):.2f} s "
        f"(min {min(boots):.2f}, max {max(boots):.2f}, {len(boots)} boots)",
        f"- instructions per SGD step (16 × 4 softmax head, -Os): {icount['step']:,.2f} "
        f"({'identical' if icount['deterministic'] else 'DIFFERENT'} over two runs)",
        f"- instructions per TRAIN sample, whole device path: {icount['path']:,.0f}",
    ]
    text = "\n".join(lines)
    publish(text, args.out, "serial.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
