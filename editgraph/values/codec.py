"""Encode node outputs to bytes, and fingerprint them by those bytes.

One encoding serves two purposes: the fingerprint of a value is the blake3 hash of its encoded
form, and the disk store writes exactly that form. So a disk entry verifies itself: hash the file,
compare with its name.

Layout of an encoded value:

    MAGIC (4 bytes) | header length (u32, little endian) | msgpack header | raw tensor bytes ...

The header holds the value's structure (plain data, registered dataclasses) with each tensor
replaced by {"__t": index}, plus one (dtype, shape, nbytes) record per tensor. Hashing dtype and
shape with the bytes matters: the same bytes as float32 [2, 8] and [4, 4] are different values.

Values that cannot be stored (a loaded model) carry their own fingerprint in `__fingerprint__`
and are kept in memory only; a process that needs one again re-runs the node that made it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import struct
import sys
from typing import Any

import blake3
import msgpack
import numpy as np

MAGIC = b"EGV1"
_HEADER_LEN = struct.Struct("<I")

# Registered dataclasses, by name. Names are part of stored headers: never rename one.
from editgraph.values.structs import STRUCTS, storable  # noqa: F401  (storable: re-exported)


class Unstorable(TypeError):
    """The value has no byte encoding (a model handle, an open file ...)."""


# Arrays are numpy arrays or torch tensors (see Node.arrays); both encode to the same bytes under
# the same dtype names, so a value's fingerprint does not depend on which kind carried it. Torch
# is never imported here: a value can only be a tensor if something imported torch already.
_NUMPY_DTYPES = ("float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint8", "bool")
_DTYPE_NAMES_NP: dict[np.dtype, str] = {np.dtype(n): n for n in _NUMPY_DTYPES}


def _torch() -> Any:
    """The torch module if this process has imported it, else None."""
    return sys.modules.get("torch")


@functools.cache
def _torch_dtypes() -> dict[str, Any]:
    import torch

    return {
        str(d).removeprefix("torch."): d
        for d in (
            torch.float64, torch.float32, torch.float16, torch.bfloat16,
            torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool,
        )
    }


@functools.cache
def _torch_dtype_names() -> dict[Any, str]:
    return {d: name for name, d in _torch_dtypes().items()}


def _is_tensor(value: Any) -> bool:
    torch = _torch()
    return torch is not None and isinstance(value, torch.Tensor)


def _dtype_name(t: Any) -> str:
    if isinstance(t, np.ndarray):
        name = _DTYPE_NAMES_NP.get(t.dtype)
        if name is None:
            raise Unstorable(f"cannot encode a numpy array of dtype {t.dtype}")
        return name
    return _torch_dtype_names()[t.dtype]


def _tensor_bytes(t: Any) -> np.ndarray:
    """The array's contiguous CPU bytes as a numpy array (zero-copy where possible)."""
    if isinstance(t, np.ndarray):
        return np.ascontiguousarray(t).reshape(-1).view(np.uint8)
    import torch

    if not t.is_cpu:
        t = t.cpu()
    if t.requires_grad:
        t = t.detach()
    if not t.is_contiguous():
        t = t.contiguous()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16: hash and store its bytes as int16
        t = t.view(torch.int16)
    return t.numpy().reshape(-1).view(np.uint8)  # numpy views cost ~0.3 us; torch ops ~3 us each


def _flatten(value: Any, tensors: list[Any]) -> Any:
    if isinstance(value, np.ndarray) or _is_tensor(value):
        tensors.append(value)
        return {"__t": len(tensors) - 1}
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if isinstance(value, (list, tuple)):
        return [_flatten(v, tensors) for v in value]
    if isinstance(value, dict):
        if any(not isinstance(k, str) for k in value):
            raise Unstorable("only dicts with string keys can be stored")
        return {k: _flatten(value[k], tensors) for k in sorted(value)}
    cls = type(value)
    if cls.__name__ in STRUCTS and STRUCTS[cls.__name__] is cls:
        fields = {f.name: _flatten(getattr(value, f.name), tensors) for f in dataclasses.fields(value)}
        return {"__dc": cls.__name__, "f": fields}
    raise Unstorable(f"cannot encode a value of type {cls.__module__}.{cls.__qualname__}")


def _unflatten(node: Any, tensors: list[Any]) -> Any:
    if isinstance(node, list):
        return [_unflatten(v, tensors) for v in node]
    if isinstance(node, dict):
        if "__t" in node and len(node) == 1:
            return tensors[node["__t"]]
        if "__dc" in node:
            cls = STRUCTS[node["__dc"]]
            return cls(**{k: _unflatten(v, tensors) for k, v in node["f"].items()})
        return {k: _unflatten(v, tensors) for k, v in node.items()}
    return node


class Encoded:
    """A value's encoded form, as the parts that go to disk in order (no concatenation copy)."""

    __slots__ = ("parts", "nbytes")

    def __init__(self, parts: list[bytes | np.ndarray], nbytes: int | None = None):
        self.parts = parts
        self.nbytes: int = sum(len(p) if isinstance(p, bytes) else p.nbytes for p in parts) if nbytes is None else nbytes

    def fingerprint(self) -> str:
        h = blake3.blake3()
        for p in self.parts:
            h.update(p)
        return h.hexdigest()

    def tobytes(self) -> bytes:
        return b"".join(self.parts)  # join takes any buffer: numpy parts are not copied first


def encode(value: Any) -> Encoded:
    torch = _torch()
    if (torch is not None and type(value) is torch.Tensor) or type(value) is np.ndarray:
        # the common case (images, masks): skip the structure walk
        raw = _tensor_bytes(value)
        prefix = _tensor_prefix(_dtype_name(value), tuple(value.shape), value.dtype.itemsize)
        return Encoded([prefix, raw], len(prefix) + raw.nbytes)
    tensors: list[Any] = []
    structure = _flatten(value, tensors)
    raws = [_tensor_bytes(t) for t in tensors]
    header = msgpack.packb(
        {
            "v": structure,
            "t": [[_dtype_name(t), list(t.shape), r.nbytes] for t, r in zip(tensors, raws)],
        },
        use_bin_type=True,
    )
    return Encoded([MAGIC + _HEADER_LEN.pack(len(header)) + header, *raws])


@functools.lru_cache(maxsize=256)
def _tensor_prefix(dtype: str, shape: tuple[int, ...], itemsize: int) -> bytes:
    """MAGIC, header length and header of a lone array: a function of dtype and shape only, so a
    chain of same-sized images packs it once."""
    nbytes = math.prod(shape) * itemsize
    header = msgpack.packb({"v": {"__t": 0}, "t": [[dtype, list(shape), nbytes]]}, use_bin_type=True)
    return MAGIC + _HEADER_LEN.pack(len(header)) + header


class CorruptEntry(ValueError):
    """Stored bytes that do not decode to a value."""


def decode(data: bytes | memoryview) -> Any:
    """Inverse of encode(). Raises CorruptEntry on anything malformed; never executes code.

    Arrays come back as torch tensors in a process that has imported torch, else as numpy arrays
    (a torch-free run reading its cache does not import torch to do so); the executor hands each
    node the kind it declares (Node.arrays)."""
    torch = _torch()
    view = memoryview(data)
    if len(view) < 8 or bytes(view[:4]) != MAGIC:
        raise CorruptEntry("bad magic")
    (hlen,) = _HEADER_LEN.unpack(view[4:8])
    if 8 + hlen > len(view):
        raise CorruptEntry("truncated header")
    try:
        header = msgpack.unpackb(view[8 : 8 + hlen], raw=False, strict_map_key=True)
        specs = header["t"]
        offset = 8 + hlen
        tensors = []
        for dtype_name, shape, nbytes in specs:
            if offset + nbytes > len(view):
                raise CorruptEntry("truncated tensor data")
            # bytearray copy: the array must own writable memory independent of the file buffer.
            buf = bytearray(view[offset : offset + nbytes])
            if dtype_name not in _NUMPY_DTYPES and dtype_name != "bfloat16":
                raise CorruptEntry(f"unknown dtype {dtype_name!r}")
            if torch is not None or dtype_name == "bfloat16":  # numpy has no bfloat16
                import torch

                dtype = _torch_dtypes()[dtype_name]
                t = torch.frombuffer(buf, dtype=torch.uint8) if nbytes else torch.empty(0, dtype=torch.uint8)
                tensors.append(t.view(dtype).reshape(shape))
            else:
                tensors.append(np.frombuffer(buf, dtype=np.uint8).view(dtype_name).reshape(shape))
            offset += nbytes
        if offset != len(view):
            raise CorruptEntry("trailing bytes")
        return _unflatten(header["v"], tensors)
    except CorruptEntry:
        raise
    except Exception as exc:  # malformed msgpack, unknown dtype or struct, bad shape
        raise CorruptEntry(f"{type(exc).__name__}: {exc}") from exc


def fingerprint(value: Any) -> str:
    """Content fingerprint of a node output. Models and other unstorables supply their own."""
    own = getattr(value, "__fingerprint__", None)
    if own is not None:
        return own() if callable(own) else str(own)
    return encode(value).fingerprint()


def value_nbytes(value: Any) -> int:
    """Approximate in-memory size, for the memory tier's byte budget."""
    if isinstance(value, np.ndarray):
        return value.nbytes
    if _is_tensor(value):
        return value.numel() * value.element_size()
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    if isinstance(value, (list, tuple)):
        return sum(value_nbytes(v) for v in value)
    if isinstance(value, dict):
        return sum(value_nbytes(v) for v in value.values())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(value_nbytes(getattr(value, f.name)) for f in dataclasses.fields(value))
    return 64
