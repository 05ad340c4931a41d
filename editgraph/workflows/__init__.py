"""Bundled workflows, found by name (`editgraph run inpaint`). Each is a JSON file beside this module;
relative paths inside one (e.g. "assets/coffee.png") resolve against this folder."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent


def names() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.json"))


def find(name: str) -> Path | None:
    path = HERE / f"{name}.json"
    return path if name and "/" not in name and path.is_file() else None
