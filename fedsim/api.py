"""fedsim from Python: run a scenario and look at what it did, from a script or a notebook.

```python
import fedsim

run = fedsim.run("scenarios/quickstart.yaml", rounds=5)
run.final_accuracy               # 0.87...
run.accuracy                     # one value per round (None where not evaluated)
model = run.torch_model()        # the final global model as a torch.nn.Module
again = fedsim.Run.load(run.out) # the same run, read back later
```

A scenario can be given four ways: the path of a YAML file, YAML text, a mapping (as the YAML
would parse), or a validated ``Scenario``. Relative paths in a file (``extends``,
``registry.data``, trace files) mean relative to that file, as on the command line; in text, a
mapping or a ``Scenario`` there is no file, so they mean relative to the current directory. Such
an input is written into the run folder as ``scenario.input.yaml`` (its relative paths made
absolute) and the run reads it from there, so ``fedsim run --resume`` and the manifest work as
for a file. A bad scenario raises ``FedsimError`` naming the input, the key and a fix, before
anything runs; text keeps its line numbers (``<scenario text>:4: rounds: ...``).

``Run`` is also what fedsim's pytest plugin returns (``fedsim_run``).
"""

from __future__ import annotations

import csv
import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from functools import cached_property
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import yaml

from fedsim.core.errors import FedsimError, clip
from fedsim.core.results import DEVICES, MANIFEST, MODEL, ROUNDS, SUMMARY
from fedsim.core.safe_yaml import load_yaml
from fedsim.core.scenario import Scenario
from fedsim.core.scenario_load import ScenarioError, anchor_paths, merged_data, with_changes

if TYPE_CHECKING:
    from numpy.typing import NDArray
    from torch import nn

    from fedsim.runner import Engine

__all__ = ["INPUT_FILE", "Run", "ScenarioInput", "run"]

ScenarioInput = str | os.PathLike[str] | Mapping[str, Any] | Scenario
T = TypeVar("T")
INPUT_FILE = "scenario.input.yaml"  # in the run folder: a scenario given as text, mapping, object
TEXT = "<scenario text>"
MAPPING = "<scenario mapping>"
OBJECT = "<Scenario>"
COPY = "scenario.yaml"  # the resolved copy the run itself writes (when it does)


class Run:
    """One run, read back from its results folder.

    Attributes:
        out: The results folder.
        summary: ``summary.json``: the final scores, costs and counts of the run.
        rounds: ``rounds.jsonl``: one mapping per round (accuracy, loss, simulated time,
            energy, bytes, failures...).
        devices: ``devices.csv``: one row per device and round, as text (``device_id``,
            ``round``, ``status``, ...).
    """

    def __init__(self, out: str | os.PathLike[str]) -> None:
        """Read the run in ``out``; prefer ``Run.load``. Raises ``FedsimError`` when ``out``
        holds no finished run (no ``summary.json``) or its records are damaged."""
        self.out = Path(out)
        self.summary = _read(self.out / SUMMARY, _mapping)
        self.rounds = _read(self.out / ROUNDS, _lines)
        self.devices = _read(self.out / DEVICES, _rows)

    @classmethod
    def load(cls, out: str | os.PathLike[str]) -> Run:
        """Open an earlier run from its results folder (what ``fedsim run`` printed)."""
        return cls(out)

    read = load  # the name the pytest plugin's FedsimRun had

    @cached_property
    def model(self) -> dict[str, NDArray[Any]]:
        """The final global model's tensors (``model.npz``) by ``state_dict`` name, as numpy
        arrays: everything the server carries, e.g. SCAFFOLD's ``control.*`` too."""
        from fedsim.core.results import read_model

        path = self.out / MODEL
        if not path.is_file():
            raise FedsimError(
                str(path), "no final model: the run stopped before its end", "rerun or --resume it"
            )
        return read_model(self.out)

    @cached_property
    def scenario(self) -> Scenario:
        """The validated scenario the run ran (from the file its manifest names; the run
        folder's ``scenario.yaml`` copy when that file is gone or has changed since)."""
        from fedsim.core.scenario_load import load_scenario

        manifest = _read(self.out / MANIFEST, _mapping)
        path, copy = Path(str(manifest.get("scenario_path", ""))), self.out / COPY
        if path.is_file():
            scenario = load_scenario(path)
            if scenario.digest() == manifest.get("scenario_sha256") or not copy.is_file():
                return scenario
        if copy.is_file():
            return load_scenario(copy)
        raise FedsimError(
            str(self.out / MANIFEST), f"its scenario {path} is gone", "put the scenario file back"
        )

    def torch_model(self) -> nn.Module:
        """The final global model as a ``torch.nn.Module`` in eval mode, built as the run built
        it (``task.model``, the algorithm's wrapping) with the weights of ``model.npz``: its
        accuracy on the dataset's test split is the run's ``final_accuracy``."""
        import numpy as np
        import torch

        from fedsim.core.data import load_task_data
        from fedsim.core.task_model import task_model

        scenario = self.scenario
        data = load_task_data(scenario.task.dataset, scenario.seed)
        model = task_model(scenario, data.num_features, data.num_outputs, 0)
        state = {k: torch.from_numpy(np.asarray(v)) for k, v in self.model.items()}
        model.load_state_dict(state, strict=True)  # casts to each tensor's own dtype
        return model.eval()

    def series(self, column: str) -> list[Any]:
        """A ``rounds.jsonl`` column, one value per round (None where it was not recorded)."""
        return [r.get(column) for r in self.rounds]

    @property
    def accuracy(self) -> list[float | None]:
        """Test accuracy of the global model per round (None: not evaluated, or regression)."""
        return self.series("accuracy")

    @property
    def loss(self) -> list[float | None]:
        """Test loss of the global model per round (None: not evaluated)."""
        return self.series("loss")

    @property
    def final_accuracy(self) -> float | None:
        """The last evaluation's accuracy (None for regression tasks)."""
        value = self.summary.get("final_accuracy")
        return None if value is None else float(value)

    def device_rows(self, device_id: int) -> list[dict[str, str]]:
        """One device's rows of ``devices.csv``, a row per round it was asked in."""
        return [r for r in self.devices if int(r["device_id"]) == device_id]

    def __repr__(self) -> str:
        score = (
            f"final_accuracy={self.final_accuracy:.4f}"
            if self.final_accuracy is not None
            else f"final_loss={self.summary.get('final_loss')!r}"
        )
        status = self.summary.get("status", "?")
        return f"Run({str(self.out)!r}, rounds={len(self.rounds)}, {score}, status={status!r})"

    def _repr_html_(self) -> str:
        """The summary's plain values as a small table (Jupyter shows this for a ``Run``)."""
        rows = "".join(
            f"<tr><th style='text-align:left'>{escape(str(k))}</th>"
            f"<td>{escape(_shown(v))}</td></tr>"
            for k, v in sorted(self.summary.items())
            if not isinstance(v, dict | list)
        )
        return f"<p><b>fedsim run</b> <code>{escape(str(self.out))}</code></p><table>{rows}</table>"


def run(
    scenario: ScenarioInput,
    *,
    out: str | os.PathLike[str] | None = None,
    engine: Engine | None = None,
    overwrite: bool = False,
    progress: bool = False,
    **changes: Any,
) -> Run:
    """Run a scenario to its end, in this process, and return the finished ``Run``.

    Args:
        scenario: The path of a scenario YAML, YAML text, a mapping, or a ``Scenario``.
        out: The results folder; default ``<output.dir>/<name>``, or ``<name>-2``... when that
            holds a run (an earlier run is never overwritten).
        engine: ``inline`` (one thread, no Ray), ``ray`` (Flower's simulation engine) or
            ``auto``; default: the scenario's ``execution.engine``.
        overwrite: Reuse ``out`` even if it holds a run.
        progress: Show a progress bar on stderr (a library stays quiet by default).
        **changes: Keys to change, dotted or with ``__``: ``rounds=3``,
            ``algorithm__lr=0.1``, ``**{"fleet.partition.alpha": 0.3}``.

    Returns:
        The run, read back from its results folder.

    Raises:
        FedsimError: The scenario is invalid (naming the input, the key and a fix), ``out``
            holds a run, or the run stopped (``RunStoppedError``, saying why).
    """
    from fedsim.runner import out_folder
    from fedsim.runner import run as run_file

    staged = _stage(scenario, changes)
    out = None if out is None else Path(out)
    observer = None
    if isinstance(staged, Path):
        if progress:
            from fedsim.core.scenario_load import load_scenario

            observer = _progress(load_scenario(staged).name)
        result = run_file(
            staged,
            out,
            overwrite=overwrite,
            engine=engine,
            observer=observer,
            command=f"fedsim.run({str(staged)!r})",
        )
        return Run(result.out)
    label, text, lines = staged
    valid = _validated(label, text, lines)
    folder = out_folder(valid, out, overwrite)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / INPUT_FILE).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise FedsimError(
            str(folder), f"cannot write the run folder: {exc}", "give out a writable folder"
        ) from None
    result = run_file(
        folder / INPUT_FILE,
        folder,
        overwrite=True,
        engine=engine,
        observer=_progress(valid.name) if progress else None,
        command=f"fedsim.run({label})",
    )
    return Run(result.out)


def _progress(name: str) -> Any:
    """A bar on stderr in a terminal, plain lines elsewhere (a notebook, a log)."""
    from fedsim.progress import ProgressObserver

    return ProgressObserver(name)


def _stage(scenario: object, changes: Mapping[str, Any]) -> Path | tuple[str, str, bool]:
    """A scenario file to run as it is, or (how errors name the input, the YAML to run, whether
    its line numbers are the user's)."""
    if isinstance(scenario, os.PathLike) or (isinstance(scenario, str) and _is_path(scenario)):
        path = Path(scenario)
        if not changes:
            return path
        return f"{path} (changed)", _dump(_changed(merged_data(path), changes)), False
    if isinstance(scenario, Scenario):
        label, data = OBJECT, scenario.model_dump(mode="json")
    elif isinstance(scenario, Mapping):
        label, data = MAPPING, _plain(scenario)
    elif isinstance(scenario, str):
        label, data = TEXT, _parsed(scenario)
    else:
        raise FedsimError(
            "scenario",
            f"expected a path, YAML text, a mapping or a Scenario, got {type(scenario).__name__}",
            "pass e.g. 'scenarios/quickstart.yaml'",
        )
    anchored = _anchored(data, Path.cwd())
    if changes:
        anchored = _changed(anchored, changes)
    if label == TEXT and anchored == data:  # the text as written: errors keep its line numbers
        return label, str(scenario), True
    return label, _dump(anchored), False


def _is_path(text: str) -> bool:
    if "\n" in text:
        return False
    try:
        return text.endswith((".yaml", ".yml")) or Path(text).is_file()
    except (OSError, ValueError):  # a NUL, a name too long: not a file
        return False


def _parsed(text: str) -> dict[str, Any]:
    data, _ = load_yaml(text, TEXT)
    if not isinstance(data, dict):
        hint = " (or the path of no file)" if "\n" not in text else ""
        raise FedsimError(
            TEXT,
            f"expected a scenario, a mapping of keys{hint}, got {clip(text)!r}",
            "pass the path of a scenario YAML, or its text (name:, fleet:, algorithm:, rounds:)",
        )
    return data


def _plain(data: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``data`` as YAML can hold it (paths become text)."""

    def refuse(value: object) -> str:
        if isinstance(value, os.PathLike):
            return os.fspath(value)  # type: ignore[no-any-return]
        raise FedsimError(
            MAPPING,
            f"a value is a {type(value).__name__}, which a scenario cannot hold",
            "use text, numbers, true/false, lists and mappings",
        )

    return json.loads(json.dumps(data, default=refuse))  # type: ignore[no-any-return]


def _changed(data: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return with_changes(data, _plain(changes))
    except KeyError as exc:  # a dotted key through a value
        raise FedsimError("changes", str(exc.args[0]), "change the value itself") from None


def _anchored(data: Mapping[str, Any], folder: Path) -> dict[str, Any]:
    """``data`` with its relative file paths made absolute against ``folder``."""
    out = _plain(data)
    parent = out.get("extends")
    if isinstance(parent, str) and parent and not Path(parent).is_absolute():
        out["extends"] = str((folder / parent).resolve())
    anchor_paths(out, folder)
    return out


def _dump(data: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(data), sort_keys=False, allow_unicode=True)


def _validated(label: str, text: str, lines: bool) -> Scenario:
    """Validate the staged YAML (and resolve its fleet) before any folder is made; errors name
    ``label`` instead of the temporary file."""
    from devices.fleet import load_fleet

    with tempfile.TemporaryDirectory(prefix="fedsim-") as tmp:
        path = Path(tmp) / INPUT_FILE
        path.write_text(text, encoding="utf-8")
        try:
            return load_fleet(path)[0]
        except FedsimError as exc:
            raise _relabel(exc, str(path), label, lines) from None


def _relabel(exc: FedsimError, path: str, label: str, keep_lines: bool) -> FedsimError:
    """``exc`` with the temporary file in its locations replaced by ``label`` (and line
    numbers dropped where they are not the user's)."""
    pattern = re.compile(re.escape(path) + r"(:\d+)?")

    def swap(where: str) -> str:
        return pattern.sub(lambda m: label + ((m[1] or "") if keep_lines else ""), where, count=1)

    for error in [exc, *(exc.errors if isinstance(exc, ScenarioError) else [])]:
        error.where, error.what = swap(error.where), swap(error.what)
        error.args = (error.line(),)
    return exc


def _read(path: Path, parse: Callable[[TextIO], T]) -> T:
    """One of a run's records; a located error when it is missing or damaged."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            return parse(f)
    except FileNotFoundError:
        raise FedsimError(
            str(path.parent),
            f"holds no finished run (no {path.name})",
            "give a run's results folder, e.g. results/quickstart",
        ) from None
    except (OSError, ValueError) as exc:
        raise FedsimError(str(path), f"is damaged: {clip(str(exc))}", "rerun the run") from None


def _mapping(f: TextIO) -> dict[str, Any]:
    value = json.load(f)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def _lines(f: TextIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in f if line.strip()]


def _rows(f: TextIO) -> list[dict[str, str]]:
    return list(csv.DictReader(f))


def _shown(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
