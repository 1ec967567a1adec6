"""Extract MLPerf Tiny closed-division inference results into one CSV.

The device cost model is calibrated against published, reproducible numbers rather than
vendor datasheets, so this script reads the MLCommons ``tiny_results_v*`` repositories
directly and records, for each row, the exact file (at a pinned commit) its latency came from.

Usage::

    python devices/data/extract_mlperf_tiny.py v1.1=PATH [v1.2=PATH ...] [--out FILE]

Each PATH is a bare git directory (read with ``git show``) or a normal clone (read from its
work tree). Problems that stop a result from becoming a row are printed on stderr, one per
line, so nothing is dropped silently. Standard library only.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import statistics
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

COLUMNS = (
    "round",
    "submitter",
    "system",
    "board",
    "soc",
    "processor",
    "clock_mhz",
    "framework",
    "benchmark",
    "precision",
    "latency_ms",
    "energy_uj",
    "source",
)

# Folder names submitters used for the four benchmarks (greenwaves v1.0 spelled them out).
BENCHMARKS = {
    "kws": "kws",
    "keyword_spotting": "kws",
    "vww": "vww",
    "visual_wake_words": "vww",
    "ic": "ic",
    "image_classification": "ic",
    "ad": "ad",
    "anomaly_detection": "ad",
}
# v1.3's streaming wake word has no per-inference throughput; it is reported, not extracted.
SKIPPED_BENCHMARKS = {"sww": "streaming wake word (duty-cycle benchmark, no inference latency)"}

# Preferred file order inside a performance/ or energy/ folder: summaries before raw logs.
_PREFERRED = (
    "results.txt",
    "performance_results.txt",
    "energy_results.txt",
    "performance_result.txt",
    "log.txt",
    "performance_log.txt",
    "energy_log.txt",
    "results.json",
)
_TEXT_SUFFIXES = (".txt", ".log", ".json")

_MEDIAN_TP = re.compile(r"Median throughput is\s+([0-9.eE+-]+)\s*inf\./sec", re.IGNORECASE)
_WINDOW_TP = re.compile(r"Throughput\s*:\s*([0-9.eE+-]+)\s*inf\./sec", re.IGNORECASE)
_MEDIAN_EN = re.compile(r"Median energy cost is\s+([0-9.eE+-]+)\s*uJ/inf", re.IGNORECASE)
_WINDOW_EN = re.compile(r"Energy/Inf\.?\s*:\s*([0-9.eE+-]+)\s*uJ/inf", re.IGNORECASE)
_INFER_START = re.compile(r"m-infer-start-(\d+)")
_LAP = re.compile(r"m-lap-us-(\d+)")
_JSON_PAIR = re.compile(r'"([^"\n]+)"\s*:\s*"((?:[^"\\\n]|\\.)*)"')
_CLOCK = re.compile(r"^\s*(?:up to\s*)?([0-9]*\.?[0-9]+)\s*(ghz|mhz|khz|g|m)?\s*$", re.IGNORECASE)


class SourceError(Exception):
    """A results repository that cannot be read at all."""


@dataclass
class Repo:
    """One results repository, bare or cloned, pinned at its HEAD commit."""

    round: str
    path: Path
    bare: bool
    commit: str = ""
    files: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, round_: str, path: Path) -> Repo:
        if (path / ".git").exists():
            repo = cls(round_, path, bare=False)
        elif (path / "HEAD").is_file() and (path / "objects").is_dir():
            repo = cls(round_, path, bare=True)
        else:
            raise SourceError(f"{path}: neither a git clone nor a bare git directory")
        repo.commit = repo._git("rev-parse", "HEAD").decode().strip()
        listing = repo._git("ls-tree", "-r", "-z", "--name-only", "HEAD").decode("utf-8")
        repo.files = [f for f in listing.split("\0") if f]
        return repo

    def _git(self, *args: str) -> bytes:
        where = ["--git-dir", str(self.path)] if self.bare else ["-C", str(self.path)]
        done = subprocess.run(["git", *where, *args], capture_output=True, check=False)
        if done.returncode != 0:
            raise SourceError(f"{self.path}: git {' '.join(args)}: {done.stderr.decode().strip()}")
        return done.stdout

    def read(self, name: str) -> str | None:
        """Text of a file at HEAD, or None where the mirror lacks the blob."""
        if self.bare:
            try:
                data = self._git("show", f"HEAD:{name}")
            except SourceError:
                return None
        else:
            try:
                data = (self.path / name).read_bytes()
            except OSError:
                return None
        return data.decode("utf-8-sig", errors="replace")

    @property
    def slug(self) -> str:
        return f"mlcommons/tiny_results_{self.round}@{self.commit}"


@dataclass(frozen=True)
class System:
    stem: str
    folder: str  # sub-folder under systems/, if the submitter used one
    fields: dict[str, str]


@dataclass(frozen=True)
class ResultDir:
    """A performance/ or energy/ folder and where it sits."""

    submitter: str
    system_path: tuple[str, ...]  # folders between results/ and the benchmark folder
    benchmark: str
    variant: tuple[str, ...]  # folders between the benchmark and the mode (latentai v0.5)
    mode: str  # "performance" or "energy"
    path: str


def _junk(name: str) -> bool:
    return any(part.startswith("._") or part == "__MACOSX" for part in name.split("/"))


def _as_text(value: object) -> str:
    # Some submitters give libraries as {"TVM": {"SHA": ...}}; the names are what matter.
    if isinstance(value, dict):
        return ", ".join(str(k) for k in value)
    if isinstance(value, list):
        return ", ".join(_as_text(v) for v in value)
    return "" if value is None else str(value)


def _first_filled(pairs: Iterable[tuple[str, object]]) -> dict[str, object]:
    """The template repeats its software keys in an empty second block: keep the first filled."""
    out: dict[str, object] = {}
    for key, value in pairs:
        name = key.strip()
        if name not in out or (not _as_text(out[name]).strip() and _as_text(value).strip()):
            out[name] = value
    return out


def parse_json_lenient(text: str) -> dict[str, str]:
    """System descriptions are hand-edited; several miss commas or hold raw tabs."""
    try:
        data = json.loads(text, strict=False, object_pairs_hook=_first_filled)
    except json.JSONDecodeError:
        data = _first_filled(_JSON_PAIR.findall(text))
    if not isinstance(data, dict):
        return {}
    return {k: _as_text(v).strip() for k, v in data.items()}


def parse_clock_mhz(text: str) -> float | None:
    """'64 MHz', '120MHz', '1.5 GHz', '277.5M' -> MHz; lists of cores or prose -> None."""
    m = _CLOCK.match(text.replace("MHZ", "MHz"))
    if not m:
        return None
    value = float(m.group(1))
    unit = (m.group(2) or "").lower()
    if unit in ("ghz", "g"):
        return value * 1000.0
    if unit == "khz":
        return value / 1000.0
    if unit in ("mhz", "m"):
        return value
    return None  # a bare number: unit unknown


def sig4(value: float) -> str:
    """Four significant digits, never in exponent notation."""
    if value == 0 or not math.isfinite(value):
        return str(value)
    decimals = 3 - math.floor(math.log10(abs(value)))
    return f"{round(value, decimals):.{max(decimals, 0)}f}"


def _field(fields: dict[str, str], *names: str) -> str:
    lowered = {k.lower(): v for k, v in fields.items()}
    for name in names:
        value = lowered.get(name.lower())
        if value is not None:
            return " ".join(str(value).split())
    return ""


def _norm(text: str) -> str:
    text = text.lower().replace("system_description", "").replace("systemdescription", "")
    return re.sub(r"[^a-z0-9]", "", text)


def load_systems(repo: Repo, issues: list[str]) -> dict[str, list[System]]:
    systems: dict[str, list[System]] = {}
    for name in repo.files:
        parts = name.split("/")
        if len(parts) < 4 or parts[0] != "closed" or parts[2] != "systems":
            continue
        if _junk(name) or not name.endswith(".json"):
            continue
        text = repo.read(name)
        if text is None:
            issues.append(f"{repo.round} {name}: system description absent from the mirror")
            continue
        fields = parse_json_lenient(text)
        if not fields:
            issues.append(f"{repo.round} {name}: system description unreadable")
            continue
        folder = "/".join(parts[3:-1])
        stem = PurePosixPath(parts[-1]).stem
        systems.setdefault(parts[1], []).append(System(stem, folder, fields))
    return systems


def find_result_dirs(repo: Repo, issues: list[str]) -> list[ResultDir]:
    dirs: dict[str, ResultDir] = {}
    for name in repo.files:
        parts = name.split("/")
        if len(parts) < 6 or parts[0] != "closed" or parts[2] != "results" or _junk(name):
            continue
        rel = parts[3:-1]  # between results/ and the file name
        if not rel or rel[-1] not in ("performance", "energy"):
            continue
        folder = "/".join(parts[:-1])
        if folder in dirs:
            continue
        bench_at = [i for i, p in enumerate(rel[:-1]) if p.lower() in BENCHMARKS]
        skipped = [p for p in rel[:-1] if p.lower() in SKIPPED_BENCHMARKS]
        if skipped:
            why = SKIPPED_BENCHMARKS[skipped[0].lower()]
            issues.append(f"{repo.round} {folder}: skipped, {why}")
            dirs[folder] = ResultDir("", (), "", (), "", folder)  # remember, emit nothing
            continue
        if not bench_at or bench_at[0] == 0:
            issues.append(f"{repo.round} {folder}: no system/benchmark folder pair recognised")
            dirs[folder] = ResultDir("", (), "", (), "", folder)
            continue
        i = bench_at[0]
        dirs[folder] = ResultDir(
            submitter=parts[1],
            system_path=tuple(rel[:i]),
            benchmark=BENCHMARKS[rel[i].lower()],
            variant=tuple(rel[i + 1 : -1]),
            mode=rel[-1],
            path=folder,
        )
    return [d for d in dirs.values() if d.mode]


def match_system(rd: ResultDir, candidates: Sequence[System]) -> System | None:
    """Exact (normalised) name first; else the shortest stem containing every folder name."""
    keys = [_norm(p) for p in rd.system_path]
    whole = "".join(keys)
    for s in candidates:
        if whole in (_norm(s.stem), _norm(s.folder)):
            return s
    fits = [
        s
        for s in candidates
        if all(k and (k in _norm(s.stem) or k == _norm(s.folder)) for k in keys)
    ]
    fits.sort(key=lambda s: len(_norm(s.stem)))
    if len(fits) == 1 or (len(fits) > 1 and len(_norm(fits[0].stem)) < len(_norm(fits[1].stem))):
        return fits[0]
    return None


def _ordered_files(repo: Repo, folder: str) -> list[str]:
    inside = [
        f
        for f in repo.files
        if f.startswith(folder + "/")
        and "/" not in f[len(folder) + 1 :]
        and not _junk(f)
        and f.lower().endswith(_TEXT_SUFFIXES)
    ]

    def rank(f: str) -> tuple[int, str]:
        base = f.rsplit("/", 1)[-1].lower()
        return (_PREFERRED.index(base) if base in _PREFERRED else len(_PREFERRED), base)

    return sorted(inside, key=rank)


def _laps_throughput(text: str) -> list[float]:
    """Throughput per window from the runner's raw trace: N inferences between two laps."""
    rates: list[float] = []
    pending: int | None = None
    laps: list[int] = []
    for line in text.splitlines():
        start = _INFER_START.search(line)
        if start:
            pending, laps = int(start.group(1)), []
            continue
        lap = _LAP.search(line)
        if lap and pending is not None:
            laps.append(int(lap.group(1)))
            if len(laps) == 2:
                if laps[1] > laps[0]:
                    rates.append(pending / ((laps[1] - laps[0]) / 1e6))
                pending = None
    return rates


def _json_throughputs(text: str) -> list[float]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return []
    out: list[float] = []
    if isinstance(data, list):
        for item in data:
            infer = item.get("infer") if isinstance(item, dict) else None
            if isinstance(infer, dict) and isinstance(infer.get("throughput"), int | float):
                out.append(float(infer["throughput"]))
    return out


@dataclass(frozen=True)
class Reading:
    value: float
    text: str  # the number as printed in the file, or a derived value
    path: str
    how: str  # "median" (as reported) or how it was derived


def _read_texts(
    repo: Repo, folder: str, median: re.Pattern[str]
) -> tuple[Reading | None, list[tuple[str, str]], list[str]]:
    """Read the folder's files in preference order, stopping at the first reported median."""
    texts: list[tuple[str, str]] = []
    absent: list[str] = []
    for f in _ordered_files(repo, folder):
        text = repo.read(f)
        if text is None:
            absent.append(f)
            continue
        m = median.search(text)
        if m:
            return Reading(float(m.group(1)), m.group(1), f, "median"), texts, absent
        texts.append((f, text))
    return None, texts, absent


def read_throughput(repo: Repo, folder: str) -> tuple[Reading | None, list[str]]:
    """Median throughput (inf/s); blobs missing from the mirror are returned if they mattered."""
    found, texts, absent = _read_texts(repo, folder, _MEDIAN_TP)
    if found:
        return found, []
    for f, text in texts:
        windows = [float(x) for x in _WINDOW_TP.findall(text)]
        windows = windows or (_json_throughputs(text) if f.endswith(".json") else [])
        if windows:
            v = statistics.median(windows)
            return Reading(v, sig4(v), f, f"median of {len(windows)} window(s)"), absent
    for f, text in texts:
        rates = _laps_throughput(text)
        if rates:
            v = statistics.median(rates)
            how = f"median of {len(rates)} window(s) from m-lap-us timestamps"
            return Reading(v, sig4(v), f, how), absent
    return None, absent


def read_energy(repo: Repo, folder: str) -> tuple[Reading | None, list[str]]:
    """Median energy per inference (uJ), with the same fallbacks as throughput."""
    found, texts, absent = _read_texts(repo, folder, _MEDIAN_EN)
    if found:
        return found, []
    for f, text in texts:
        windows = [float(x) for x in _WINDOW_EN.findall(text)]
        if windows:
            v = statistics.median(windows)
            return Reading(v, sig4(v), f, f"median of {len(windows)} window(s)"), absent
    return None, absent


def _precision(system: System, rd: ResultDir) -> str:
    names = [system.stem, *rd.system_path, *rd.variant]
    names += [v for k, v in system.fields.items() if "precision" in k.lower()]
    text = " ".join(names).lower()
    return "float32" if re.search(r"float|fp32", text) else "int8"


def _framework(fields: dict[str, str]) -> str:
    frame = _field(fields, "Inference Framework")
    libs = _field(fields, "Software Libraries")
    return f"{frame} | {libs}" if libs else frame


def _clock(fields: dict[str, str]) -> str:
    freq = _field(fields, "Processor(s) Frequencies", "Processor(s) Frequency")
    mhz = parse_clock_mhz(freq) if freq else None
    return "" if mhz is None else f"{mhz:g}"


def extract(repo: Repo, issues: list[str]) -> list[dict[str, str]]:
    systems = load_systems(repo, issues)
    result_dirs = find_result_dirs(repo, issues)
    groups: dict[tuple[str, tuple[str, ...], str, tuple[str, ...]], dict[str, ResultDir]] = {}
    for rd in result_dirs:
        key = (rd.submitter, rd.system_path, rd.benchmark, rd.variant)
        groups.setdefault(key, {})[rd.mode] = rd
    rows: list[dict[str, str]] = []
    for (submitter, system_path, bench, variant), modes in sorted(groups.items()):
        where = f"{repo.round} closed/{submitter}/results/{'/'.join(system_path)}/{bench}"
        if variant:
            where += "/" + "/".join(variant)
        system = match_system(next(iter(modes.values())), systems.get(submitter, []))
        if system is None:
            issues.append(f"{where}: no system description matches {'/'.join(system_path)}")
            continue
        perf = modes.get("performance")
        tp: Reading | None = None
        if perf is not None:
            tp, absent = read_throughput(repo, perf.path)
            for f in absent:
                issues.append(f"{repo.round} {f}: blob absent from the mirror")
        if tp is None and "energy" in modes:
            tp, _ = read_throughput(repo, modes["energy"].path)
            if tp is not None:
                issues.append(f"{where}: no performance run; latency from the energy run")
        if tp is None or tp.value <= 0:
            issues.append(f"{where}: no throughput found; row left out")
            continue
        if tp.how != "median":
            issues.append(f"{where}: no reported median; latency = 1000 / {tp.how}")
        energy: Reading | None = None
        if "energy" in modes:
            energy, absent = read_energy(repo, modes["energy"].path)
            for f in absent:
                issues.append(f"{repo.round} {f}: blob absent from the mirror")
            if energy is None:
                issues.append(f"{where}: energy folder without a readable median energy")
        info = system.fields
        rows.append(
            {
                "round": repo.round,
                "submitter": submitter,
                "system": system.stem,
                "board": _field(info, "Board Name"),
                "soc": _field(info, "SoC Name"),
                "processor": _field(info, "Processor(s) Name", "Processor Name"),
                "clock_mhz": _clock(info),
                "framework": _framework(info),
                "benchmark": bench,
                "precision": _precision(system, perf or next(iter(modes.values()))),
                "latency_ms": sig4(1000.0 / tp.value),
                "energy_uj": energy.text if energy else "",
                "source": f"{repo.slug}:{tp.path}",
            }
        )
    return rows


def _round_name(text: str) -> str:
    text = text.strip()
    return text if text.startswith("v") else f"v{text}"


def write_csv(rows: Iterable[dict[str, str]], out: Path | None) -> None:
    handle = out.open("w", newline="", encoding="utf-8") if out else sys.stdout
    try:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    finally:
        if out:
            handle.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("repos", nargs="+", metavar="ROUND=PATH", help="e.g. v1.1=/src/v1.1")
    parser.add_argument("--out", type=Path, help="CSV file to write (default: stdout)")
    args = parser.parse_args(argv)
    rows: list[dict[str, str]] = []
    issues: list[str] = []
    for spec in args.repos:
        round_, sep, path = spec.partition("=")
        if not sep or not path:
            parser.error(f"{spec!r}: expected ROUND=PATH, e.g. v1.1=/src/tiny_results_v1.1")
        try:
            repo = Repo.open(_round_name(round_), Path(path))
        except SourceError as err:
            print(f"extract_mlperf_tiny: {err}", file=sys.stderr)
            return 2
        rows.extend(extract(repo, issues))
    write_csv(rows, args.out)
    for line in issues:
        print(f"note: {line}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
