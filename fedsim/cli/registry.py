"""``fedsim registry ...``: validate, query, match, fits, inventory, TD export/import, serve.

Every command reads the catalog (profiles, links, model descriptions) plus ``--data`` Turtle files
of fleet devices into a store (``--store memory`` by default, or ``oxigraph``; ``--db FOLDER`` for a
persistent one). Query answers print as a table, CSV or JSON (``--format``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer

from fedsim.cli.format import (
    FormatOpt,
    Records,
    check_format,
    err,
    out,
    print_records,
    print_text,
    write_text,
)
from fedsim.core.errors import FedsimError, did_you_mean

__all__ = ["register", "registry_app"]

registry_app = typer.Typer(
    help="The semantic registry: devices, models and runs in RDF.", no_args_is_help=True
)

DataOpt = typer.Option([], "--data", help="Turtle file of fleet devices (repeatable)")
StoreOpt = typer.Option("memory", "--store", help="memory (rdflib) or oxigraph")
DbOpt = typer.Option(None, "--db", help="oxigraph: a persistent store folder")


def register(app: typer.Typer) -> None:
    app.add_typer(registry_app, name="registry")


def _open(data: Sequence[Path], store: str, db: Path | None) -> Any:
    from ontology.fleet_registry import FleetRegistry

    if store not in ("memory", "oxigraph"):
        raise FedsimError("--store", f"unknown store '{store}'", "use memory or oxigraph")
    for path in data:
        if not path.is_file():
            raise FedsimError("--data", f"no file {path}", "give a Turtle file of devices")
    return FleetRegistry.open(list(data), store, db)  # type: ignore[arg-type]


def _dump(items: Sequence[Any]) -> list[dict[str, Any]]:
    return [item.model_dump() for item in items]


@registry_app.command("query")
def query(
    file: str = typer.Argument(..., help="a .rq file or a named query (ontology/queries)"),
    bind: list[str] = typer.Option([], "--bind", help="name=value (repeatable)"),
    data: list[Path] = DataOpt,
    store: str = StoreOpt,
    db: Path | None = DbOpt,
    fmt: str = FormatOpt,
) -> None:
    """Run a SELECT query; its variables are bound with --bind (typed, never pasted in)."""
    from ontology.fleet_registry import parse_binding, query_path

    check_format(fmt)
    bindings = dict(parse_binding(b) for b in bind)
    _check_bindings(query_path(file), bindings)
    with _open(data, store, db) as registry:
        rows = registry.query(file, bindings)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    print_records(Records(rows, columns, title=f"{file}: {len(rows)} rows"), fmt)


def _check_bindings(path: Path, bindings: dict[str, Any]) -> None:
    """Refuse a --bind of a variable the query does not mention, before opening a store."""
    from ontology.fleet_registry import check_bindings, read_query

    check_bindings(read_query(path), path.name, bindings, "--bind")


@registry_app.command("match")
def match(
    model: str = typer.Option(..., "--model", help="a model description, e.g. mlp-100.kws"),
    data: list[Path] = DataOpt,
    store: str = StoreOpt,
    db: Path | None = DbOpt,
    fmt: str = FormatOpt,
) -> None:
    """Which device classes, and which registered devices, can run MODEL, and train it
    (full: all layers; head: the last layer, the rest in flash; no)."""
    check_format(fmt)
    with _open(data, store, db) as registry:
        profiles = registry.profiles_for(model)
        devices = registry.devices_for(model)
    tables = [
        Records(
            _dump(profiles),
            ["profile", "ram", "flash", "train", "sensors"],
            "profiles",
            f"profiles that can run {model} (sensors: built in, or to attach)",
        )
    ]
    if devices or data or db or fmt == "json":  # JSON has the same keys with or without devices
        tables.append(
            Records(
                _dump(devices),
                ["name", "profile", "fleet", "ram", "flash", "train"],
                "devices",
                f"registered devices that can run {model}: {len(devices)}",
            )
        )
    print_records(tables, fmt)


@registry_app.command("fits")
def fits(
    device: str = typer.Option(..., "--device", help="a registered device or a profile name"),
    data: list[Path] = DataOpt,
    store: str = StoreOpt,
    db: Path | None = DbOpt,
    fmt: str = FormatOpt,
) -> None:
    """Which models a device (or a device class) can run, and train."""
    check_format(fmt)
    with _open(data, store, db) as registry:
        models = registry.models_for(device)
    columns = ["model", "inference_ram", "flash_need", "train_ram", "train", "sensors"]
    print_records(
        Records(_dump(models), columns, title=f"models that fit {device}: {len(models)}"), fmt
    )


@registry_app.command("inventory")
def inventory(
    data: list[Path] = DataOpt,
    store: str = StoreOpt,
    db: Path | None = DbOpt,
    fmt: str = FormatOpt,
) -> None:
    """The registered devices by profile and fleet."""
    check_format(fmt)
    with _open(data, store, db) as registry:
        rows = registry.inventory()
    total = sum(r.devices for r in rows)
    print_records(
        Records(_dump(rows), ["profile", "fleet", "devices"], title=f"{total} devices"), fmt
    )


@registry_app.command("history")
def history(
    run: str = typer.Option(..., "--run", help="a run id (its results folder name)"),
    data: list[Path] = DataOpt,
    store: str = StoreOpt,
    db: Path | None = DbOpt,
    fmt: str = FormatOpt,
) -> None:
    """Devices seen in a run, with rounds, updates delivered, energy, bytes, mean loss (from a
    persistent registry, or --data RUN_DIR/participation.ttl)."""
    check_format(fmt)
    with _open(data, store, db) as registry:
        rows = registry.run_devices(run)
        if not rows:
            _check_run(run, [str(r["runId"]) for r in registry.store.select(RUN_IDS)])
    columns = ["device", "profile", "rounds", "delivered", "energy_mj", "bytes", "mean_loss"]
    print_records(Records(_dump(rows), columns, title=f"run {run}: {len(rows)} devices"), fmt)


RUN_IDS = """PREFIX fedsim: <https://w3id.org/fedsim/vocab#>
SELECT DISTINCT ?runId WHERE { ?run a fedsim:Run ; fedsim:runId ?runId } ORDER BY ?runId"""
SHOWN_RUNS = 20  # run ids an error lists at most


def _check_run(run: str, known: list[str]) -> None:
    """A run id the registry does not hold is an error that names the ones it does (a run it
    holds may have seen no devices: that is an answer)."""
    if run in known:
        return
    if not known:
        raise FedsimError(
            f"--run {run}",
            "the registry holds no runs",
            "give --data RUN_DIR/participation.ttl (a run with a registry section writes it), "
            "or --db the persistent registry its runs wrote back to",
        )
    shown = ", ".join(known[:SHOWN_RUNS]) + (", ..." if len(known) > SHOWN_RUNS else "")
    raise FedsimError(
        f"--run {run}",
        f"no such run in the registry ({len(known)} runs: {shown}){did_you_mean(run, known)}",
        "give one of these run ids (a run folder's name)",
    )


@registry_app.command("catalog-models")
def catalog_models() -> None:
    """Regenerate ontology/catalog/models.ttl from the torch models (every architecture on every
    classification dataset: counted MACs, parameters, RAM and flash)."""
    from devices.model_catalog import write_model_catalog

    path = write_model_catalog()
    out.print(f"wrote {path}")


@registry_app.command("validate")
def validate(
    files: list[Path] = typer.Argument(None, help="Turtle files (default: the shipped catalog)"),
    fmt: str = FormatOpt,
) -> None:
    """Check device, model and run descriptions against the SHACL shapes (ontology/shapes):
    one line per violation (node, property, value, fix), or records with --format csv/json;
    exit 2 if there is any."""
    from dataclasses import asdict

    from ontology.validate import validate_files

    check_format(fmt)
    for path in files or []:
        if not path.is_file():
            raise FedsimError(str(path), "no such file", "give Turtle files to validate")
    violations = validate_files(files or [], with_catalog=True)
    if fmt != "table":
        columns = ["severity", "focus", "path", "value", "message", "fix"]
        print_records(Records([asdict(v) for v in violations], columns, "violations"), fmt)
    if violations:
        for v in violations if fmt == "table" else []:
            print_text(f"{v.line()}\n")
        raise FedsimError(
            "registry validate",
            f"{len(violations)} violations",
            "fix each as its line says, then run validate again",
        )
    what = ", ".join(str(f) for f in files) if files else "the catalog"
    (out if fmt == "table" else err).print(f"{what}: conforms to the fedsim shapes")


def _graph(data: Sequence[Path]) -> Any:
    from ontology.registry import CATALOG_DIR
    from ontology.validate import load_turtle

    for path in data:
        if not path.is_file():
            raise FedsimError("--data", f"no file {path}", "give a Turtle file of devices")
    return load_turtle([*sorted(CATALOG_DIR.glob("*.ttl")), *data])


@registry_app.command("export-td")
def export_td(
    thing: str = typer.Argument(..., help="a device (name or device:<name>) or a profile name"),
    data: list[Path] = DataOpt,
    output: Path | None = typer.Option(None, "-o", "--output", help="write here, not stdout"),
) -> None:
    """A W3C Thing Description (TD 1.1 JSON-LD) of a registered device or a device profile."""
    from ontology.fleet_registry import FleetRegistry
    from ontology.td import export_td as export
    from ontology.vocab import DEV, DEVICE

    graph = _graph(data)
    with FleetRegistry.open(list(data)) as registry:
        names = {r["name"]: r["device"] for r in registry.query("device-iris")}
        profiles = {r["name"] for r in registry.query("profile-names")}
    if thing in names:
        iri = str(names[thing])
    elif thing in profiles:
        iri = str(DEV[thing])
    elif ":" in thing:
        iri = thing
    else:
        iri = str(DEVICE[thing])  # reported as unknown, with the closest names, by export
    text = json.dumps(export(graph, iri), indent=2, ensure_ascii=False) + "\n"
    write_text(text, output)


@registry_app.command("import-td")
def import_td(
    file: Path = typer.Argument(..., help="a TD (JSON-LD) exported by fedsim or written alike"),
    output: Path | None = typer.Option(None, "-o", "--output", help="Turtle file to write"),
) -> None:
    """The fedsim description in a Thing Description, as Turtle (checked against the TD JSON
    Schema; parsed offline with the local TD 1.1 context)."""
    from fedsim.core.textfile import read_text
    from ontology.td import import_td as read_td

    if not file.is_file():
        raise FedsimError(str(file), "no such file", "give a TD JSON-LD file")
    text = read_text(file, "Thing Description", 16 * 1024 * 1024, "a TD describes one device")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FedsimError(
            f"{file}:{exc.lineno}", f"not JSON: {exc.msg}", "fix the syntax"
        ) from None
    except RecursionError:
        raise FedsimError(str(file), "JSON nested too deep for a TD", "give a TD file") from None
    text = read_td(document, str(file)).serialize(format="turtle")
    write_text(text, output)


@registry_app.command("serve")
def serve(
    data: list[Path] = DataOpt,
    store: str = typer.Option("oxigraph", "--store", help="oxigraph (fast) or memory"),
    db: Path | None = DbOpt,
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    port: int = typer.Option(3030, help="port (0: any free one)"),
    timeout_s: float = typer.Option(
        10.0, "--timeout", help="seconds a query may wait for a worker, and then run"
    ),
    max_rows: int = typer.Option(10_000, "--max-rows", help="rows returned at most"),
    workers: int = typer.Option(4, "--workers", help="query worker processes"),
    allow_service: list[str] = typer.Option(
        [], "--allow-service", help="URL prefix a SERVICE clause may query (repeatable)"
    ),
    client_timeout_s: float = typer.Option(
        10.0, "--client-timeout", help="seconds a connection has to send a whole request"
    ),
    max_connections: int = typer.Option(
        256, "--max-connections", help="connections served at once (more: 503)"
    ),
    backlog: int = typer.Option(1024, "--backlog", help="connections waiting to be accepted"),
) -> None:
    """Serve the registry read-only over the SPARQL 1.1 Protocol at http://HOST:PORT/sparql
    (GET/POST; JSON, XML or CSV results; updates and SERVICE refused) until Ctrl-C."""
    import time

    from ontology.endpoint import serve as start
    from ontology.endpoint_guard import allowed_prefix

    limits = {"--timeout": timeout_s, "--max-rows": max_rows, "--workers": workers}
    limits |= {"--client-timeout": client_timeout_s, "--max-connections": max_connections}
    limits |= {"--backlog": backlog}
    for name, value in limits.items():
        if not value > 0:
            raise FedsimError(name, f"must be positive, got {value:g}", f"give {name} > 0")
    for prefix in allow_service:
        try:
            allowed_prefix(prefix)
        except ValueError as exc:
            raise FedsimError("--allow-service", str(exc), "give an http(s) URL prefix") from None
    with _open(data, store, db) as registry:
        try:
            server = start(
                registry.store,
                host,
                port,
                timeout_s,
                max_rows,
                workers,
                allow_service,
                client_timeout_s,
                max_connections,
                backlog,
            )
        except OSError as exc:
            raise FedsimError(
                f"--host {host} --port {port}",
                f"cannot listen there: {exc.strerror or exc}",
                "choose another --port (0: any free one) or stop what holds it",
            ) from None
        with server:
            out.print(f"SPARQL endpoint: {server.url} (read-only; Ctrl-C stops it)")
            while True:
                time.sleep(3600)
