"""``fedsim new``: scaffold a scenario, or an algorithm plugin package, like ``flwr new``.

``fedsim new scenario NAME`` writes a commented scenario that validates, with the JSON Schema
beside it (``scenario.schema.json``) so an editor completes and checks its keys wherever it lives;
``fedsim new algorithm NAME`` writes a plugin package from the template in ``fedsim/templates``.
Missing values are asked for only at a terminal; otherwise the defaults are used.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

import typer

from fedsim.cli.format import out, print_warning
from fedsim.core.errors import FedsimError, clip

__all__ = ["ScenarioChoices", "new_algorithm", "new_scenario", "register", "scenario_yaml"]

app = typer.Typer(help="Scaffold a scenario or an algorithm plugin package.", no_args_is_help=True)
SCHEMA_NAME = "scenario.schema.json"
DEFAULT_PROFILES = ("rpi4:4", "nano33-ble-sense:4", "esp32-s3:2")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")  # a scenario name is a results folder name
_PLUGIN = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")  # an entry-point name and, with _, a module
_PLAIN = re.compile(r"^[A-Za-z][A-Za-z0-9_.:+/-]*$")
_YAML_WORDS = {"true", "false", "null", "yes", "no", "on", "off", "y", "n"}


def register(parent: typer.Typer) -> None:
    parent.add_typer(app, name="new")


def _interactive() -> bool:
    """Questions only when a person can answer them (not in a pipe, CI or a test)."""
    return sys.stdin.isatty()


def _ask(value: Any, question: str, default: Any) -> Any:
    if value is not None:
        return value
    if _interactive():
        return typer.prompt(question, default=default, type=type(default))
    return default


def _scalar(value: object) -> str:
    """A YAML scalar: plain where unambiguous, else JSON's quoted form (valid YAML)."""
    text = str(value)
    if isinstance(value, str) and (not _PLAIN.match(text) or text.lower() in _YAML_WORDS):
        return json.dumps(text)
    return text


class ScenarioChoices:
    """What ``fedsim new scenario`` writes, checked against what fedsim knows."""

    def __init__(
        self,
        name: str,
        dataset: str,
        model: str,
        algorithm: str,
        profiles: Sequence[str],
        rounds: int,
    ) -> None:
        if not _NAME.match(name) or set(name) == {"."}:
            raise FedsimError(
                f"NAME '{clip(name)}'",
                "a scenario name becomes its results folder",
                "use letters, digits, _ . - (e.g. my-fleet)",
            )
        self.name, self.rounds = name, rounds
        self.dataset = _known("--dataset", dataset, "dataset")
        self.model = _known("--model", model, "model")
        self.algorithm = algorithm
        self.groups = [_profile(text) for text in profiles]
        if rounds < 1:
            raise FedsimError(f"--rounds {rounds}", "a run has at least one round", "use ≥ 1")

    @property
    def devices(self) -> int:
        return sum(count for _, count in self.groups)


def _known(option: str, name: str, kind: str) -> str:
    from fedsim.core.data import DATASETS
    from fedsim.core.models import MODELS

    table = DATASETS if kind == "dataset" else MODELS
    try:
        return table.check(name)
    except ValueError as exc:
        fix = f"fedsim {'data list' if kind == 'dataset' else 'devices profiles --model'}"
        raise FedsimError(option, str(exc), f"see {fix}") from None


def _profile(text: str) -> tuple[str, int]:
    """``PROFILE:COUNT`` → (a known profile, count ≥ 1)."""
    from ontology.registry import default_registry

    name, _, count = text.partition(":")
    if not count.isdigit() or int(count) < 1:
        raise FedsimError(
            f"--profile {clip(text)}", "expected PROFILE:COUNT", "e.g. --profile rpi4:4"
        )
    registry = default_registry()
    if name not in registry.names():
        from fedsim.core.errors import known_names

        raise FedsimError(
            f"--profile {clip(text)}",
            known_names("profile", name, registry.names()),
            "fedsim devices profiles lists them",
        )
    return name, int(count)


def _commented(text: str, comment: str) -> str:
    """``text`` with ``# comment`` aligned after it (column 29, or one space past a long text)."""
    return f"{text:<28} # {comment}" if comment else text


def _algorithm_lines(kind: str) -> list[str]:
    """``algorithm:`` with its kind and, commented out, its other keys at their defaults."""
    from fedsim.core.algorithms import algorithm_class

    cls = algorithm_class(kind, "--algorithm")
    lines = [
        "algorithm:",
        _commented(f"  kind: {_scalar(kind)}", "fedsim algorithms lists the kinds"),
    ]
    for key, field in cls.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if key == "kind" or not isinstance(default, int | float | str | bool) or default is None:
            continue
        value = json.dumps(default) if isinstance(default, bool) else _scalar(default)
        lines.append(_commented(f"  # {key}: {value}", clip(field.description or "", 64)))
    return lines


def scenario_yaml(choices: ScenarioChoices, schema: str = SCHEMA_NAME) -> str:
    """The commented scenario ``fedsim new scenario`` writes."""
    from fedsim.schema import schema_comment

    groups = [f"    - profile: {_scalar(p)}\n      count: {n}" for p, n in choices.groups]
    about = f"{choices.algorithm} on {choices.dataset}, {choices.devices} devices"
    return "\n".join(
        [
            schema_comment(schema),
            f"# {choices.name}: written by `fedsim new scenario`. Every key, its default, unit "
            "and range:",
            "# the docs' Scenario reference; your editor completes and checks keys with the "
            "schema above.",
            f"name: {choices.name}",
            f"description: {json.dumps(about)}",
            _commented("seed: 0", "seeds the data split, sampling, faults, initial model"),
            "",
            "task:",
            _commented(f"  dataset: {_scalar(choices.dataset)}", "fedsim data list"),
            _commented(f"  model: {_scalar(choices.model)}", "or package.module:name (your own)"),
            "",
            "fleet:",
            _commented("  groups:", "fedsim devices profiles lists the profiles"),
            *groups,
            "  partition:",
            _commented("    kind: iid", "or dirichlet (alpha: 0.5), shards, natural"),
            "",
            *_algorithm_lines(choices.algorithm),
            "",
            f"rounds: {choices.rounds}",
            _commented("# clients_per_round: 4", "devices sampled per round (default: all)"),
            _commented("# deadline_s: 30", "simulated seconds a round waits for devices"),
            "",
            "execution:",
            _commented("  engine: auto", "inline for small runs, ray for large ones"),
            "",
        ]
    )


def _schema_for_editors() -> str:
    """The schema with installed plugins' kinds (a broken plugin: the built-ins, and a warning)."""
    from fedsim.schema import schema_text

    try:
        return schema_text(plugins=True)
    except FedsimError as exc:
        print_warning(f"{exc.line()} (the schema beside the scenario lists the built-ins only)")
        return schema_text(plugins=False)


def _as_option(
    error: FedsimError, choices: ScenarioChoices, draft: Path, path: Path
) -> FedsimError:
    """A problem of the draft, said of the option that chose it (the file was not written):
    an algorithm that needs another dataset or model (prototypes, fedins) names them."""
    for key, option, value in (
        ("task.dataset", "--dataset", choices.dataset),
        ("task.model", "--model", choices.model),
    ):
        if error.where.endswith(f": {key}"):
            return FedsimError(f"{option} {value}", error.what, error.fix)
    return FedsimError(error.where.replace(str(draft), str(path)), error.what, error.fix)


def new_scenario(choices: ScenarioChoices, folder: Path, force: bool = False) -> Path:
    """Write ``folder/NAME.yaml`` (and the schema beside it) once it validates; return its path."""
    from fedsim.core.scenario_load import ScenarioError, load_scenario

    path = folder / f"{choices.name}.yaml"
    from fedsim.core.out_path import check_out

    check_out(folder, "--out", "folder")  # a file there is refused; missing parents are made
    folder.mkdir(exist_ok=True)
    if path.exists() and not force:
        raise FedsimError(str(path), "already exists", "pick another name, or --force to replace")
    draft = folder / f".{choices.name}.new.yaml"
    draft.write_text(scenario_yaml(choices), encoding="utf-8")
    try:
        load_scenario(draft)
    except ScenarioError as exc:
        raise ScenarioError([_as_option(e, choices, draft, path) for e in exc.errors]) from None
    finally:
        text = draft.read_text(encoding="utf-8")
        draft.unlink()
    path.write_text(text, encoding="utf-8")
    (folder / SCHEMA_NAME).write_text(_schema_for_editors(), encoding="utf-8")
    return path


@app.command("scenario")
def scenario(
    name: str = typer.Argument(..., help="the scenario's name (its file is NAME.yaml)"),
    dataset: str | None = typer.Option(None, help="fedsim data list (default: digits)"),
    model: str | None = typer.Option(None, help="default: mlp"),
    algorithm: str | None = typer.Option(None, help="fedsim algorithms (default: fedavg)"),
    profile: list[str] | None = typer.Option(
        None, help="PROFILE:COUNT, repeatable (default: rpi4:4, nano33-ble-sense:4, esp32-s3:2)"
    ),
    rounds: int | None = typer.Option(None, help="default: 10"),
    out_dir: Path = typer.Option(Path("."), "--out", help="folder to write it in"),
    force: bool = typer.Option(False, "--force", help="replace NAME.yaml if it exists"),
) -> None:
    """A commented scenario that validates, and scenario.schema.json beside it for editors."""
    profiles = profile or None
    if profiles is None and _interactive():
        answer = typer.prompt(
            "Devices (PROFILE:COUNT, comma-separated)", ",".join(DEFAULT_PROFILES)
        )
        profiles = [p.strip() for p in answer.split(",") if p.strip()]
    choices = ScenarioChoices(
        name,
        _ask(dataset, "Dataset", "digits"),
        _ask(model, "Model", "mlp"),
        _ask(algorithm, "Algorithm", "fedavg"),
        profiles or list(DEFAULT_PROFILES),
        _ask(rounds, "Rounds", 10),
    )
    path = new_scenario(choices, out_dir, force)
    shown = os.path.relpath(path) if not path.is_absolute() else str(path)
    out.print(f"wrote {shown} and {SCHEMA_NAME} beside it (editor completion)")
    out.print(f"next: fedsim validate {shown}\n      fedsim run {shown}")


def _template_files() -> list[tuple[str, str]]:
    """(relative path, text) of every file of the algorithm template (package data)."""
    root = files("fedsim") / "templates" / "algorithm"
    found: list[tuple[str, str]] = []
    stack = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        for entry in folder.iterdir():
            if entry.is_dir():
                stack.append((entry, f"{prefix}{entry.name}/"))
            elif entry.name.endswith(".tmpl"):
                found.append((prefix + entry.name.removesuffix(".tmpl"), entry.read_text("utf-8")))
    return sorted(found)


def new_algorithm(name: str, folder: Path, force: bool = False) -> list[Path]:
    """Write the plugin package ``name`` into ``folder``; return the files written."""
    from fedsim.core.algorithms import ALGORITHMS

    if not _PLUGIN.match(name):
        raise FedsimError(
            f"NAME '{clip(name)}'",
            "an algorithm name is its kind, an entry point and (with _ for -) a Python module",
            "use lowercase letters, digits, _ and -, starting with a letter (e.g. fedmom)",
        )
    if name in ALGORITHMS.builtins():
        raise FedsimError(f"NAME '{name}'", "is a built-in algorithm", "pick another name")
    from fedsim.core.out_path import check_out

    check_out(folder, "--out", "folder")  # a file there is one located line, not a traceback
    if folder.exists() and any(folder.iterdir()) and not force:
        raise FedsimError(str(folder), "exists and is not empty", "use --out, or --force")
    module = name.replace("-", "_")
    values = {
        "name": name,
        "module": module,
        "class": "".join(part.capitalize() for part in re.split(r"[-_]", name) if part),
        "dist": f"fedsim-{name}",
    }
    written = []
    for relative, text in _template_files():
        target = (
            relative.replace("package/", f"{module}/")
            .replace("scenario.yaml", f"{name}.yaml")
            .replace("test_algorithm.py", f"test_{module}.py")
        )
        for key, value in values.items():
            text = text.replace("{{" + key + "}}", value)
        path = folder / target
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    schema = folder / "scenarios" / SCHEMA_NAME
    schema.write_text(_plugin_schema(name), encoding="utf-8")
    return [*written, schema]


def _plugin_schema(kind: str) -> str:
    """The schema for the new package's scenarios: its kind is accepted (its keys are known once
    it is installed: fedsim schema --plugins)."""
    from fedsim.schema import allow_kinds, scenario_json_schema

    schema = allow_kinds(scenario_json_schema(plugins=False), [kind])
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


@app.command("algorithm")
def algorithm(
    name: str = typer.Argument(..., help="the algorithm's kind, e.g. fedmom"),
    out_dir: Path | None = typer.Option(None, "--out", help="the package folder (default: NAME)"),
    force: bool = typer.Option(False, "--force", help="write into a folder that is not empty"),
) -> None:
    """A plugin package: pyproject (entry point), the algorithm, a scenario and a pytest test."""
    folder = out_dir or Path(name)
    new_algorithm(name, folder, force)
    out.print(f"wrote the plugin package {folder}/ (kind: {name})")
    out.print(
        f"next: pip install -e {folder}\n      fedsim algorithms\n"
        f"      fedsim run {folder}/scenarios/{name}.yaml\n      (cd {folder} && pytest)"
    )
