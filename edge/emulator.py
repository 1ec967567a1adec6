"""Emulated devices for runs without hardware: the C firmware on a host pty, or on a Cortex-M4F
in QEMU (``mps2-an386``), each reachable as a serial port the bridge opens.

    with qemu_mcu() as mcu:          # builds the image if needed, boots it, waits for HELLO
        print(mcu.port)              # socket://127.0.0.1:PORT: put it in a scenario's attached
    with host_firmware("--duplicate-replies") as fw:
        print(fw.port)               # /dev/pts/N

``fedsim devices emulate`` runs the QEMU board until Ctrl-C. The toolchain comes from Debian
(``gcc``, ``qemu-system-arm``, ``gcc-arm-none-eabi``, ``libnewlib-arm-none-eabi``; ``make test``
installs them); a missing one is an ``EmulatorError`` saying what to install.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from edge.bridge import BridgeError, SerialBridge

__all__ = [
    "FIRMWARE",
    "QEMU_BOARD",
    "EmulatorError",
    "Running",
    "build_firmware",
    "host_firmware",
    "make_firmware",
    "qemu_command",
    "qemu_mcu",
]

FIRMWARE = Path(__file__).resolve().parent / "firmware"
QEMU_BOARD = ["qemu-system-arm", "-M", "mps2-an386", "-nographic", "-monitor", "none"]
ICOUNT = ["-icount", "shift=0,align=off,sleep=off"]  # one virtual ns per instruction
TOOLS = {
    "host": ("make", "cc"),
    "host-asan": ("make", "cc"),
    "tools": ("make", "cc"),
    "qemu": ("make", "arm-none-eabi-gcc", "qemu-system-arm"),
}
APT = "apt-get install --no-install-recommends gcc make qemu-system-arm gcc-arm-none-eabi "
APT += "libnewlib-arm-none-eabi"


class EmulatorError(RuntimeError):
    """An emulated device could not be built or started; the message says what to do."""


@dataclass(frozen=True)
class Running:
    """A started emulated device: the port to give the bridge, and its boot-to-HELLO time."""

    port: str
    process: subprocess.Popen[str]
    boot_s: float


def make_firmware(*targets: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``make -C edge/firmware TARGETS``, one build at a time on this machine: every build writes
    the same ``build/`` folder, so two at once (test workers, a benchmark beside a test run)
    would link each other's half-written objects. An exclusive lock on ``build/.lock`` orders
    them; the second finds the first's outputs up to date."""
    import fcntl

    lock_path = FIRMWARE / "build" / ".lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return subprocess.run(
                ["make", "-C", str(FIRMWARE), *targets],
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def build_firmware(target: str = "qemu") -> Path:
    """``make -C edge/firmware TARGET`` (quick when up to date); the build folder."""
    missing = [tool for tool in TOOLS.get(target, ("make",)) if shutil.which(tool) is None]
    if missing:
        raise EmulatorError(f"{', '.join(missing)} not found: {APT}")
    done = make_firmware(target)
    if done.returncode != 0:
        raise EmulatorError(f"firmware build failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return FIRMWARE / "build"


def qemu_command(elf: Path, serial: str, icount: bool = False) -> list[str]:
    return [*QEMU_BOARD, *(ICOUNT if icount else []), "-kernel", str(elf), "-serial", serial]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_for_hello(port: str, proc: subprocess.Popen[str], started: float) -> float:
    """Seconds from ``started`` to the device's first HELLO reply (one connection, retried)."""
    deadline = started + 20
    bridge = SerialBridge(port, timeout=0.02, retries=0)
    try:
        while True:
            try:
                bridge.hello()  # opens the port first if it is not open
                return time.monotonic() - started
            except BridgeError:
                if proc.poll() is not None:
                    raise EmulatorError(f"the emulator exited with {proc.returncode}") from None
                if time.monotonic() > deadline:
                    raise EmulatorError(f"no HELLO from {port} within 20 s") from None
                time.sleep(0.005)
    finally:
        bridge.close()


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextmanager
def qemu_mcu(icount: bool = False, tcp_port: int | None = None) -> Iterator[Running]:
    """The firmware on an emulated Cortex-M4F (QEMU ``mps2-an386``), UART0 on a local TCP socket
    (``nodelay=on``: without it every reply waits ~40 ms for Nagle); stopped on exit."""
    elf = build_firmware("qemu") / "qemu" / "fedsim-mps2-an386.elf"
    tcp_port = tcp_port or _free_port()
    serial = f"tcp:127.0.0.1:{tcp_port},server=on,wait=off,nodelay=on"
    started = time.monotonic()
    proc = subprocess.Popen(
        qemu_command(elf, serial, icount),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        port = f"socket://127.0.0.1:{tcp_port}"
        yield Running(port, proc, _wait_for_hello(port, proc, started))
    finally:
        _stop(proc)


@contextmanager
def host_firmware(*flags: str, sanitizers: bool = True) -> Iterator[Running]:
    """The firmware built for this machine (by default under ASan/UBSan) behind a pty; ``flags``
    inject faults (``--reset-after-samples N``, ``--silent-after N``, ``--duplicate-replies``).
    On exit it must stop cleanly, with no sanitizer report: an ``EmulatorError`` otherwise."""
    variant = "host-asan" if sanitizers else "host"
    binary = build_firmware(variant) / variant / "fs_host"
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(binary), *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    match = re.match(r"PTY (\S+)", proc.stdout.readline())
    if match is None:
        _stop(proc)
        raise EmulatorError("the host firmware did not print its pty")
    try:
        yield Running(match[1], proc, time.monotonic() - started)
    finally:
        _stop(proc)
        errors = proc.stderr.read() if proc.stderr else ""
        if proc.returncode != 0 or "Sanitizer" in errors or "runtime error" in errors:
            raise EmulatorError(f"host firmware ended with {proc.returncode}:\n{errors[-3000:]}")
