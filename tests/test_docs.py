"""Docs that cannot rot: the commands the README and the quick start show are run as written, and
every relative link in README.md and docs/ points at a file that exists.

A shell block is run when an HTML comment ``<!-- test: NAME -->`` stands on the line before its
```` ```bash ```` fence (invisible on GitHub and in the site). The blocks run in order, in a
temporary copy of ``scenarios/`` shrunk to short runs (2 rounds, the inline engine), so the
whole walk through takes well under a minute; ``make demo`` itself is not run. The strict docs
build (``make docs``) checks the links and anchors between pages of the site; the README is not in
the build, so its links are checked here, with the docs pages' for good measure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

TESTED = [ROOT / "README.md", ROOT / "docs" / "getting-started" / "quickstart.md"]
# Pages the docs build generates (docs/hooks.py): links to them are right though no file exists.
GENERATED = {"reference/cli.md", "reference/scenario.md", "reference/protocol.md"}

BLOCK = re.compile(r"^<!-- test: ([\w-]+) -->\n```(?:bash|sh|console)\n(.*?)^```", re.M | re.S)
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def marked_blocks(path: Path) -> list[tuple[str, str]]:
    """(name, commands) of every block marked for testing in ``path``, in order."""
    return [(m[1], m[2]) for m in BLOCK.finditer(path.read_text(encoding="utf-8"))]


def commands(block: str) -> list[str]:
    """The commands of a block: one a line, comments and blank lines left out."""
    lines = (line.split(" #", 1)[0].strip() for line in block.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def shrink(scenarios: Path) -> None:
    """Short runs: the quick start's scenario (which the others extend) for 2 rounds, inline."""
    path = scenarios / "quickstart.yaml"
    text = path.read_text(encoding="utf-8")
    text, rounds = re.subn(r"(?m)^rounds: \d+", "rounds: 2", text)
    text = re.sub(r"(?m)^(\s+engine:) \w+", r"\1 inline", text)  # none: auto, inline when small
    assert rounds == 1, "scenarios/quickstart.yaml has no top-level `rounds:` to shorten"
    path.write_text(text, encoding="utf-8")


def run_block(name: str, block: str, cwd: Path) -> None:
    """Run each command of a block in ``cwd``; fail naming the block, the command and its output."""
    env = {**os.environ, "NO_COLOR": "1", "MPLBACKEND": "Agg", "FLWR_TELEMETRY_ENABLED": "0"}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    for command in commands(block):
        proc = subprocess.run(
            ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, (
            f"block `{name}`: `{command}` exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )


def broken_links(path: Path) -> list[str]:
    """The relative links of a Markdown file whose target file does not exist (code left out)."""
    text = INLINE_CODE.sub("", FENCE.sub("", path.read_text(encoding="utf-8")))
    generated = {(ROOT / "docs" / page).resolve() for page in GENERATED}
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL, or an anchor in the same page (the strict build checks those)
        resolved = (path.parent / target.split("#", 1)[0]).resolve()
        if not resolved.exists() and resolved not in generated:
            broken.append(f"{os.path.relpath(path, ROOT)}: ({target})")
    return broken


def test_every_tested_page_marks_its_commands() -> None:
    for path in TESTED:
        names = [name for name, _ in marked_blocks(path)]
        assert {"run", "compare", "registry"} <= set(names), f"{path}: marked blocks {names}"


def test_the_commands_shown_run_as_written(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "scenarios", tmp_path / "scenarios")
    shrink(tmp_path / "scenarios")
    seen: set[str] = set()
    for path in TESTED:
        for name, block in marked_blocks(path):
            if block not in seen:  # the README and the quick start show the same blocks
                seen.add(block)
                run_block(name, block, tmp_path)
    # what the prose around the blocks says to open
    for made in [
        "results/quickstart/report.html",
        "compare.html",
        "results/quickstart-sweep/sweep.html",
    ]:
        assert (tmp_path / made).is_file(), made


def test_a_failing_command_fails_its_block(tmp_path: Path) -> None:
    with pytest.raises(
        AssertionError, match=re.escape("fedsim validate scenarios/nope.yaml` exited 2")
    ):
        run_block("broken", "fedsim validate scenarios/nope.yaml   # a typo\n", tmp_path)


def test_every_relative_link_points_at_a_file() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    broken = [link for page in pages for link in broken_links(page)]
    assert not broken, "links to files that do not exist:\n" + "\n".join(broken)


def test_a_broken_link_is_found(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](page.md) [url](https://flower.ai) [anchor](#x) `[code](nope.md)`\n"
        "[gone](nope.md#part)\n```\n[in a block](nope2.md)\n```\n",
        encoding="utf-8",
    )
    assert [link.rsplit(": ", 1)[1] for link in broken_links(page)] == ["(nope.md#part)"]
