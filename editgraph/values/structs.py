"""The dataclasses the codec may encode field by field, registered by name (torch-free, so
socket types can be declared without importing torch)."""

from __future__ import annotations

import dataclasses

STRUCTS: dict[str, type] = {}


def storable(cls: type) -> type:
    """Class decorator: a dataclass whose instances can be encoded field by field."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"@storable needs a dataclass, got {cls.__name__}")
    STRUCTS[cls.__name__] = cls
    return cls
