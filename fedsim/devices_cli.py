"""``fedsim devices scan | info | attach``: real devices on serial ports (``devices/PROTOCOL.md``).

``scan`` lists the serial ports (and with ``--probe`` which of them answer HELLO), ``info PORT``
shows a device's self-description, ``attach PORT`` writes it into a registry Turtle file as a
``fedsim:Device`` (validated with the catalog) and prints the scenario lines that use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from fedsim.core.errors import FedsimError
from fedsim.core.out_path import check_out

__all__ = ["attach", "emulate", "info", "scan"]

out = Console(highlight=False, soft_wrap=True, emoji=False)

PortArg = typer.Argument(..., help="/dev/ttyACM0, /dev/serial0, socket://127.0.0.1:5555, …")
BaudOpt = typer.Option(115200, "--baud", min=300, help="line rate (ignored by USB CDC and sockets)")
TimeoutOpt = typer.Option(1.0, "--timeout", min=0.01, help="seconds to wait for each reply")


def _hello(port: str, baud: int, timeout: float) -> Any:
    from devices.bridge import BridgeError, SerialBridge

    try:
        with SerialBridge(port, baudrate=baud, timeout=timeout, retries=1) as bridge:
            return bridge.hello()
    except BridgeError as exc:
        raise FedsimError("", str(exc)) from None


def _text(value: str) -> Text:
    """A value from a device or the user as a table cell: printed as written, never read as
    rich markup (a board named '[/]'), with control characters (terminal escapes) replaced."""
    from devices.bridge import printable

    return Text(printable(value))


def _size(n: int) -> str:
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} B"


def scan(
    probe: bool = typer.Option(False, help="send HELLO to each port and show who answers"),
    timeout: float = typer.Option(0.3, "--timeout", min=0.01, help="seconds per probe"),
) -> None:
    """List serial ports a device could be on (USB CDC, UART, Bluetooth serial)."""
    from serial.tools import list_ports

    ports = sorted(list_ports.comports(), key=lambda p: p.device)
    if not ports:
        out.print(
            "no serial ports found. Plug the board in (a data cable, not a charge-only one); "
            "an emulator or a Pi agent on TCP is reached as socket://HOST:PORT without a scan"
        )
        return
    columns = ["port", "description", "hardware id"] + (["fedsim device"] if probe else [])
    table = Table(*columns, box=None)
    for p in ports:
        row = [p.device, p.description or "-", p.hwid or "-"]
        if probe:
            try:
                hello = _hello(p.device, 115200, timeout)
                row.append(f"{hello.board} ({hello.firmware})")
            except FedsimError:
                row.append("-")
        table.add_row(*map(_text, row))
    out.print(table)


def info(port: str = PortArg, baud: int = BaudOpt, timeout: float = TimeoutOpt) -> None:
    """Ask the device on PORT who it is (HELLO) and show its self-description."""
    hello = _hello(port, baud, timeout)
    caps = [
        name
        for flag, name in ((hello.measures_time, "time"), (hello.measures_energy, "energy"))
        if flag
    ]
    table = Table("field", "value", box=None)
    rows = {
        "board": hello.board,
        "core": hello.core,
        "clock": f"{hello.clock_hz / 1e6:g} MHz" if hello.clock_hz else "not reported",
        "SRAM": _size(hello.sram_bytes),
        "flash": _size(hello.flash_bytes) if hello.flash_bytes else "not reported",
        "firmware": hello.firmware,
        "protocol": str(hello.protocol),
        "learners": ", ".join(hello.learners) or "none",
        "learner slots": str(hello.slots),
        "weight capacity": f"{hello.max_floats} floats ({_size(4 * hello.max_floats)})",
        "largest head": f"{hello.max_outputs} outputs × {hello.max_features} features",
        "max payload": f"{hello.max_payload} B",
        "sensors": ", ".join(hello.sensors) or "none",
        "measures": ", ".join(caps) or "nothing (the cost model estimates)",
    }
    for key, value in rows.items():
        table.add_row(key, _text(value))
    out.print(table)


def attach(
    port: str = PortArg,
    name: str = typer.Option(..., help="the device's registry name, e.g. lab-nano-1"),
    profile: str | None = typer.Option(
        None, help="catalog profile for its cost model (default: guessed from the board)"
    ),
    fleet: str | None = typer.Option(None, help="fleet (site) it belongs to"),
    output: Path = typer.Option(
        Path("attached.ttl"), "--out", help="registry Turtle file to write it into (merged)"
    ),
    baud: int = BaudOpt,
    timeout: float = TimeoutOpt,
) -> None:
    """Register the device on PORT: its HELLO becomes a fedsim:Device in a Turtle file."""
    from devices.bridge import printable
    from ontology.attached import AttachedDevice, guess_profile, register
    from ontology.registry import default_registry

    check_out(output, "--out", "file")  # a missing folder is an error, as for every --out
    hello = _hello(port, baud, timeout)
    registry = default_registry()
    if profile is None:
        profile = guess_profile(hello.board, registry.names())
    known = registry.profile(profile, "--profile")
    device = AttachedDevice(
        name=name,
        profile=known.name,
        port=port,
        board=hello.board,
        firmware=hello.firmware,
        protocol=hello.protocol,
        sram_bytes=min(hello.sram_bytes, known.sram_bytes) or known.sram_bytes,
        flash_bytes=min(hello.flash_bytes, known.flash_bytes) or known.flash_bytes,
        learner_slots=hello.slots,
        weight_capacity=hello.max_floats,
        learners=hello.learners,
        sensors=hello.sensors,
        fleet=fleet,
    )
    try:
        register(device, output)
    except OSError as exc:
        where, why = f"--out {output}", exc.strerror or type(exc).__name__
        raise FedsimError(where, f"cannot write it ({why})", "give another path") from None
    board = printable(hello.board)
    out.print(f"registered {name} ({board}, profile {known.name}) in {output}", markup=False)
    out.print("use it in a scenario (algorithm.kind: tinyol):")
    group = f"{{profile: {known.name}, count: 1, attached: {{port: '{port}'}}}}"
    out.print(f"  fleet: {{groups: [{group}]}}", markup=False)
    out.print(f"query it: fedsim registry inventory --data {output}", markup=False)


def emulate(
    board: str = typer.Option("mps2-an386", help="mps2-an386 (Cortex-M4F in QEMU) or host (a pty)"),
    tcp_port: int | None = typer.Option(None, "--tcp-port", help="QEMU's TCP port (default: free)"),
) -> None:
    """Run the fedsim firmware on an emulated board until Ctrl-C, and say its port."""
    import signal
    import time

    from devices.emulator import EmulatorError, host_firmware, qemu_mcu

    if board not in ("mps2-an386", "host"):
        raise FedsimError("--board", f"unknown board '{board}'", "use mps2-an386 or host")

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # a kill stops the emulator too, as Ctrl-C does
    try:
        context = qemu_mcu(tcp_port=tcp_port) if board == "mps2-an386" else host_firmware()
        with context as running:
            line = f"{board} answers on {running.port} (booted in {running.boot_s:.2f} s)"
            out.print(line, markup=False)
            out.print(f"  fedsim devices info {running.port}", markup=False)
            out.print("  Ctrl-C stops it")
            while running.process.poll() is None:
                time.sleep(0.2)
    except EmulatorError as exc:
        raise FedsimError(board, str(exc)) from None
    except KeyboardInterrupt:
        out.print("stopped")
