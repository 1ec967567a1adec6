"""``fedsim devices profiles | scan | info | attach | emulate``: the catalog's device profiles,
and real devices on serial ports (``edge/PROTOCOL.md``).

``scan`` lists the serial ports (and with ``--probe`` which of them answer HELLO), ``info PORT``
shows a device's self-description, ``attach PORT`` writes it into a registry Turtle file as a
``fedsim:Device`` (validated with the catalog) and prints the scenario lines that use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from fedsim.cli.format import (
    FormatOpt,
    Records,
    check_format,
    out,
    print_json,
    print_records,
    size_text,
)
from fedsim.core.errors import FedsimError
from fedsim.core.out_path import check_out

__all__ = [
    "attach",
    "devices_app",
    "emulate",
    "info",
    "predict",
    "profiles",
    "register",
    "scan",
]

devices_app = typer.Typer(
    help="Device profiles from the RDF catalog, and real devices on serial ports.",
    no_args_is_help=True,
)
PortArg = typer.Argument(..., help="/dev/ttyACM0, /dev/serial0, socket://127.0.0.1:5555, …")
BaudOpt = typer.Option(115200, "--baud", min=300, help="line rate (ignored by USB CDC and sockets)")
TimeoutOpt = typer.Option(1.0, "--timeout", min=0.01, help="seconds to wait for each reply")


def register(app: typer.Typer) -> None:
    app.add_typer(devices_app, name="devices")


def _watts(mw: float) -> str:  # 3 significant digits at most, in W from 1 W up
    return f"{mw / 1000:.3g} W" if mw >= 1000 else f"{mw:.3g} mW"


def _rate(bps: float) -> str:
    for unit, size in (("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bps >= size:
            return f"{bps / size:.3g} {unit}"
    return f"{bps:.3g} bit/s"


@devices_app.command("profiles")
def profiles(
    model: str | None = typer.Option(None, help="also say whether this model fits, e.g. mlp-100"),
    dataset: str = typer.Option("digits", help="the dataset that fixes the model's input"),
    batch: int = typer.Option(16, min=1, help="training batch size"),
    fmt: str = FormatOpt,
) -> None:
    """Every profile's core, clock, memory, FPU, power (computing / idle), cycles per MAC and
    links, then the link types; with --model, whether training (all layers, or the head only)
    and inference fit in SRAM."""
    from ontology.registry import default_registry

    check_format(fmt)
    registry = default_registry()
    if fmt != "table" and model is None:
        print_records(_profile_records(registry), fmt)
        return
    columns = ["profile", "core", "clock", "SRAM", "flash", "FPU", "power", "cycles/MAC", "links"]
    rows = [
        dict(
            zip(
                columns,
                [
                    p.name,
                    f"{p.cores}× {p.core}",
                    f"{p.clock_mhz:g} MHz",
                    size_text(p.sram_bytes),
                    size_text(p.flash_bytes),
                    "yes" if p.fpu else "no",
                    f"{_watts(p.active_mw)} / {_watts(p.idle_mw)}",
                    f"{p.cycles_per_mac:g}",
                    ", ".join(p.radios) or "-",
                ],
                strict=True,
            )
        )
        for p in registry.profiles()
    ]
    if model is not None:
        columns += _add_fits(rows, registry.profiles(), model, dataset, batch)
    links = [
        {
            "link": t.kind,
            "throughput": _rate(t.throughput_bps),
            "latency": f"{t.latency_s:g} s" if t.latency_s >= 1 else f"{t.latency_s * 1000:g} ms",
            "MTU": f"{t.mtu_bytes} B",
            "label": t.label,
        }
        for t in registry.link_types()
    ]
    tables = [
        Records(rows, columns, "profiles"),
        Records(links, ["link", "throughput", "latency", "MTU", "label"], "links"),
    ]
    if fmt != "table" or model is None:
        print_records(tables, fmt)
        return
    print_records(tables[0], fmt)
    out.print(
        "train: all layers (weights, gradients, optimizer state, activations at the batch "
        "size) in SRAM; head: only the last layer trains, the frozen layers stay in flash; "
        "ms/sample: one training step's compute for what fits (cost model: MACs × cycles/MAC "
        "÷ clock)"
    )
    out.print()
    print_records(tables[1], fmt)


def _profile_records(registry: Any) -> list[Records]:
    """The profiles and link types as plain values (numbers in canonical units) for a pipe."""
    columns = [
        "name",
        "board",
        "soc",
        "core",
        "cores",
        "clock_mhz",
        "sram_bytes",
        "flash_bytes",
        "fpu",
        "active_mw",
        "idle_mw",
        "cycles_per_mac",
        "links",
    ]
    rows = [
        {**p.model_dump(include=set(columns)), "links": ",".join(p.radios)}
        for p in registry.profiles()
    ]
    links = [t.model_dump() for t in registry.link_types()]
    link_columns = ["kind", "label", "throughput_bps", "latency_s", "mtu_bytes"]
    return [Records(rows, columns, "profiles"), Records(links, link_columns, "links")]


@devices_app.command("predict")
def predict(
    model: str = typer.Option(..., "--model", help="mlperf-kws|vww|ic|ad, or a zoo model"),
    profile: str = typer.Option(..., "--profile", help="a device profile, e.g. nucleo-l4r5zi"),
    precision: str = typer.Option("int8", "--precision", help="int8, float16 or float32"),
    kernels: str | None = typer.Option(
        None,
        "--kernels",
        help="kernel library: cmsis-nn (int8 default), reference, x-cube-ai, "
        "plumerai, hale, microtvm, onnc, leip, fedsim-c (float32 default)",
    ),
    dataset: str | None = typer.Option(None, help="the dataset fixing a zoo model's input"),
    fmt: str = FormatOpt,
) -> None:
    """Predict a model's inference latency and energy, flash and arena, and a training step on a
    profile, each with where its figure comes from (calibrated on MLPerf Tiny, measured under
    QEMU, datasheet or estimate). ``--format json`` prints one object."""
    from devices.predict import model_input, predict_costs
    from ontology.registry import default_registry

    check_format(fmt)
    found = default_registry().profile(profile, "--profile")
    costs = predict_costs(found, model_input(model, dataset), precision, kernels)
    if fmt == "json":
        print_json(costs)
        return
    keys = [
        ("inference_latency_ms", "inference latency", "ms"),
        ("inference_energy_uj", "inference energy", "µJ"),
        ("flash_bytes", "flash", "bytes"),
        ("arena_bytes", "arena", "bytes"),
        ("train_latency_ms_per_sample", "training, per sample", "ms"),
        ("train_energy_uj_per_sample", "training energy, per sample", "µJ"),
        ("train_ram_bytes", "training RAM (float32, batch 1)", "bytes"),
    ]
    sources = costs["sources"]
    rows = [
        {
            "figure": label,
            "value": _figure_text(costs[key], fmt),
            "unit": unit,
            "basis": sources.get(key, {}).get("basis", "counted"),
        }
        for key, label, unit in keys
    ]
    measured = costs["measured"]
    if measured is not None:
        rows.append(
            {
                "figure": f"published ({measured['round']} {measured['system']})",
                "value": f"{measured['latency_ms']:.4g}",
                "unit": "ms",
                "basis": "measured",
            }
        )
    columns = ["figure", "value", "unit", "basis"]
    title = (
        f"{costs['model']} on {costs['profile']} ({costs['core']} at {costs['clock_mhz']:g} MHz), "
        f"{costs['precision']}, {costs['kernels']} kernels"
    )
    print_records(Records(rows, columns, title=title), fmt)
    if fmt == "table":
        out.print(f"inference figure: {sources['inference_latency_ms']['detail']}")


def _figure_text(value: float, fmt: str) -> str:
    if fmt != "table":  # a pipe reads plain numbers
        return f"{value:.6g}"
    return f"{value:,.4g}" if isinstance(value, float) else f"{value:,}"


def _add_fits(
    rows: list[dict[str, Any]], profiles: Any, model: str, dataset: str, batch: int
) -> list[str]:
    """Add to each profile's row whether ``model`` trains (all layers, the head) and infers in its
    SRAM, and a training step's time; returns the added columns (each names the bytes needed)."""
    from devices.cost import CyclesPerMac, SramFit, head_sram_bytes
    from devices.footprint import footprint, head_parameters
    from fedsim.core.data import load_task_data
    from fedsim.core.models import build_model

    data = load_task_data(dataset, 0)
    torch_model = build_model(model, data.num_features, data.num_outputs, 0)
    full = footprint(torch_model, data.sample_shape, batch)
    head = footprint(torch_model, data.sample_shape, batch, head_parameters(torch_model))
    columns = [
        "ms/sample",
        f"train ({size_text(full.train_bytes)})",
        f"head ({size_text(head_sram_bytes(head))})",
        f"infer ({size_text(full.inference_bytes)})",
    ]
    for row, p in zip(rows, profiles, strict=True):
        scope = SramFit().scope(p, full, head, "head-only")
        macs = full.train_macs if scope == "full" else head.train_macs
        seconds = CyclesPerMac().seconds(p, macs)
        values = [
            "-" if scope == "skip" else f"{seconds * 1e3:.3g}",
            "fits" if scope == "full" else "no",
            "fits" if scope in ("full", "head") else "no",
            "fits" if full.inference_bytes <= p.sram_bytes else "no",
        ]
        row.update(zip(columns, values, strict=True))
    return columns


def _hello(port: str, baud: int, timeout: float) -> Any:
    from edge.bridge import BridgeError, SerialBridge

    try:
        with SerialBridge(port, baudrate=baud, timeout=timeout, retries=1) as bridge:
            return bridge.hello()
    except BridgeError as exc:
        raise FedsimError("", str(exc)) from None


@devices_app.command("scan")
def scan(
    probe: bool = typer.Option(False, help="send HELLO to each port and show who answers"),
    timeout: float = typer.Option(0.3, "--timeout", min=0.01, help="seconds per probe"),
    fmt: str = FormatOpt,
) -> None:
    """List serial ports a device could be on (USB CDC, UART, Bluetooth serial)."""
    from serial.tools import list_ports

    check_format(fmt)
    ports = sorted(list_ports.comports(), key=lambda p: p.device)
    if not ports and fmt == "table":
        out.print(
            "no serial ports found. Plug the board in (a data cable, not a charge-only one); "
            "an emulator or a Pi agent on TCP is reached as socket://HOST:PORT without a scan"
        )
        return
    columns = ["port", "description", "hardware id"] + (["fedsim device"] if probe else [])
    rows = []
    for p in ports:
        row = [p.device, p.description or "-", p.hwid or "-"]
        if probe:
            try:
                hello = _hello(p.device, 115200, timeout)
                row.append(f"{hello.board} ({hello.firmware})")
            except FedsimError:
                row.append("-")
        rows.append(dict(zip(columns, row, strict=True)))
    print_records(Records(rows, columns), fmt)


@devices_app.command("info")
def info(
    port: str = PortArg, baud: int = BaudOpt, timeout: float = TimeoutOpt, fmt: str = FormatOpt
) -> None:
    """Ask the device on PORT who it is (HELLO) and show its self-description."""
    check_format(fmt)
    hello = _hello(port, baud, timeout)
    caps = [
        name
        for flag, name in ((hello.measures_time, "time"), (hello.measures_energy, "energy"))
        if flag
    ]
    rows = {
        "board": hello.board,
        "core": hello.core,
        "clock": f"{hello.clock_hz / 1e6:g} MHz" if hello.clock_hz else "not reported",
        "SRAM": size_text(hello.sram_bytes),
        "flash": size_text(hello.flash_bytes) if hello.flash_bytes else "not reported",
        "firmware": hello.firmware,
        "protocol": str(hello.protocol),
        "learners": ", ".join(hello.learners) or "none",
        "learner slots": str(hello.slots),
        "weight capacity": f"{hello.max_floats} floats ({size_text(4 * hello.max_floats)})",
        "largest head": f"{hello.max_outputs} outputs × {hello.max_features} features",
        "max payload": f"{hello.max_payload} B",
        "sensors": ", ".join(hello.sensors) or "none",
        "measures": ", ".join(caps) or "nothing (the cost model estimates)",
    }
    records = [{"field": key, "value": value} for key, value in rows.items()]
    print_records(Records(records, ["field", "value"]), fmt)


@devices_app.command("attach")
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
    from edge.bridge import printable
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
    out.print(f"registered {name} ({board}, profile {known.name}) in {output}")
    out.print("use it in a scenario (algorithm.kind: tinyol):")
    group = f"{{profile: {known.name}, count: 1, attached: {{port: '{port}'}}}}"
    out.print(f"  fleet: {{groups: [{group}]}}")
    out.print(f"query it: fedsim registry inventory --data {output}")


@devices_app.command("emulate")
def emulate(
    board: str = typer.Option("mps2-an386", help="mps2-an386 (Cortex-M4F in QEMU) or host (a pty)"),
    tcp_port: int | None = typer.Option(None, "--tcp-port", help="QEMU's TCP port (default: free)"),
) -> None:
    """Run the fedsim firmware on an emulated board until Ctrl-C, and say its port."""
    import signal
    import time

    from edge.emulator import EmulatorError, host_firmware, qemu_mcu

    if board not in ("mps2-an386", "host"):
        raise FedsimError("--board", f"unknown board '{board}'", "use mps2-an386 or host")

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # a kill stops the emulator too, as Ctrl-C does
    try:
        context = qemu_mcu(tcp_port=tcp_port) if board == "mps2-an386" else host_firmware()
        with context as running:
            line = f"{board} answers on {running.port} (booted in {running.boot_s:.2f} s)"
            out.print(line)
            out.print(f"  fedsim devices info {running.port}")
            out.print("  Ctrl-C stops it")
            while running.process.poll() is None:
                time.sleep(0.2)
    except EmulatorError as exc:
        raise FedsimError(board, str(exc)) from None
    except KeyboardInterrupt:
        out.print("stopped")
