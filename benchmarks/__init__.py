"""Benchmarks: one command each, printing a table (``python -m benchmarks.<name>``)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["publish"]


def publish(text: str, folder: Path, name: str) -> None:
    """Print a benchmark's table and keep it as ``<folder>/<name>``."""
    print(text)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text + "\n", encoding="utf-8")
