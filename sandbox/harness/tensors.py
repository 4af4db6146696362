"""Encode values (tensors, scalars, lists) to a JSON description plus raw bytes, and back.

No pickle anywhere: a candidate controls the bytes it sends, so decoding must not run code.
"""

from __future__ import annotations

import math
from typing import Any

import torch

_DTYPES: dict[str, torch.dtype] = {
    str(dtype).removeprefix("torch."): dtype
    for dtype in (
        torch.float64, torch.float32, torch.float16, torch.bfloat16,
        torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool,
        torch.complex64, torch.complex128,
    )
}


class EncodeError(ValueError):
    """A value that cannot cross the process boundary (e.g. a tensor subclass)."""


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def is_plain_dense(value: Any) -> bool:
    return (
        type(value) is torch.Tensor
        and value.layout == torch.strided
        and not value.is_nested
        and not value.is_meta
    )


def encode(value: Any) -> tuple[Any, bytes]:
    """Return (description, payload). Tensors must be plain dense tensors."""
    chunks: list[bytes] = []
    offset = 0

    def walk(item: Any) -> Any:
        nonlocal offset
        if isinstance(item, torch.Tensor):
            if not is_plain_dense(item):
                raise EncodeError(f"not a plain dense tensor: {type(item).__qualname__} (layout {item.layout})")
            if dtype_name(item.dtype) not in _DTYPES:
                raise EncodeError(f"unsupported dtype {item.dtype}")
            flat = item.detach().contiguous().reshape(-1).cpu()
            raw = flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""
            desc = {"t": "tensor", "dtype": dtype_name(item.dtype), "shape": list(item.shape),
                    "offset": offset, "nbytes": len(raw)}
            chunks.append(raw)
            offset += len(raw)
            return desc
        if isinstance(item, bool) or item is None or isinstance(item, str):
            return {"t": "const", "v": item}
        if isinstance(item, int):
            return {"t": "int", "v": int(item)}
        if isinstance(item, float):
            return {"t": "float", "v": repr(item)}
        if isinstance(item, (list, tuple)):
            return {"t": type(item).__name__, "items": [walk(x) for x in item]}
        if isinstance(item, torch.dtype):
            return {"t": "dtype", "v": dtype_name(item)}
        raise EncodeError(f"cannot transfer a value of type {type(item).__qualname__}")

    description = walk(value)
    return description, b"".join(chunks)


def decode(description: Any, payload: bytes | bytearray, device: str | torch.device = "cpu") -> Any:
    """Rebuild a value; anything malformed (the candidate controls these bytes) is an EncodeError."""
    try:
        return _decode(description, payload, device)
    except EncodeError:
        raise
    except Exception as exc:  # KeyError, TypeError, RecursionError, torch's RuntimeError, ...
        raise EncodeError(f"malformed value description: {type(exc).__name__}: {exc}") from exc


def _decode(description: Any, payload: bytes | bytearray, device: str | torch.device) -> Any:
    buffer = payload if isinstance(payload, bytearray) else bytearray(payload)

    def walk(desc: Any) -> Any:
        kind = desc["t"]
        if kind == "tensor":
            dtype = _DTYPES[desc["dtype"]]
            shape = desc["shape"]
            if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
                raise EncodeError("tensor shape must be a list of non-negative ints")
            nbytes, offset = desc["nbytes"], desc["offset"]
            if type(nbytes) is not int or type(offset) is not int:
                raise EncodeError("tensor offset and size must be ints")
            if nbytes != math.prod(shape) * torch.empty((), dtype=dtype).element_size():
                raise EncodeError("tensor byte count does not match its shape")
            if offset < 0 or offset + nbytes > len(buffer):
                raise EncodeError("tensor bytes out of range")
            if nbytes == 0:
                return torch.empty(shape, dtype=dtype, device=device)
            raw = torch.frombuffer(buffer, dtype=torch.uint8, count=nbytes, offset=offset)
            return raw.view(dtype).reshape(shape).to(device, copy=True)
        if kind == "const":
            return desc["v"]
        if kind == "int":
            return int(desc["v"])
        if kind == "float":
            return float(desc["v"])
        if kind in ("list", "tuple"):
            items = [walk(x) for x in desc["items"]]
            return items if kind == "list" else tuple(items)
        if kind == "dtype":
            return _DTYPES[desc["v"]]
        raise EncodeError(f"unknown value kind {kind!r}")

    return walk(description)
