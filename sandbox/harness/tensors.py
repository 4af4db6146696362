"""Encode values (tensors, scalars, lists) to a JSON description plus raw bytes, and back.

No pickle anywhere: a candidate controls the bytes it sends, so decoding must not run code.
"""

from __future__ import annotations

import math
import mmap
import os
from typing import Any

import torch

_DTYPES: dict[str, torch.dtype] = {
    str(dtype).removeprefix("torch."): dtype
    for dtype in (
        torch.float64,
        torch.float32,
        torch.float16,
        torch.bfloat16,
        torch.int64,
        torch.int32,
        torch.int16,
        torch.int8,
        torch.uint8,
        torch.bool,
        torch.complex64,
        torch.complex128,
    )
}


class EncodeError(ValueError):
    """A value that cannot cross the process boundary (e.g. a tensor subclass)."""


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def is_plain_dense(value: Any) -> bool:
    return type(value) is torch.Tensor and value.layout == torch.strided and not value.is_nested and not value.is_meta


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
            desc = {
                "t": "tensor",
                "dtype": dtype_name(item.dtype),
                "shape": list(item.shape),
                "offset": offset,
                "nbytes": len(raw),
            }
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


def decode(description: Any, payload: bytes | bytearray | mmap.mmap, device: str | torch.device = "cpu") -> Any:
    """Rebuild a value; anything malformed (the candidate controls these bytes) is an EncodeError."""
    try:
        return _decode(description, payload, device)
    except EncodeError:
        raise
    except Exception as exc:  # KeyError, TypeError, RecursionError, torch's RuntimeError, ...
        raise EncodeError(f"malformed value description: {type(exc).__name__}: {exc}") from exc


def _decode(description: Any, payload: bytes | bytearray | mmap.mmap, device: str | torch.device) -> Any:
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


# --- the data plane: shared memory (CPU) and CUDA IPC (GPU), never bytes in a pipe -----------------
#
# A shared value's description is an encoded-value description whose tensors name where their bytes
# are: {"fd": i, "offset", "nbytes"} (the i-th descriptor sent with the frame: a memfd laid out as
# `encode` lays out its payload) or {"ipc": handle, "offset", "strides"} (a CUDA allocation of the
# process that exported it). Every description is checked against the memory it names.

_ALIGN = 512


def _layout(value: Any) -> tuple[Any, list[torch.Tensor], int]:
    """The description of `value` with each tensor at an aligned offset of one buffer, the tensors
    in order, and the buffer's size. Raises EncodeError for what cannot be shared."""
    found: list[torch.Tensor] = []
    offset = 0

    def walk(item: Any) -> Any:
        nonlocal offset
        if isinstance(item, torch.Tensor):
            if not is_plain_dense(item):
                raise EncodeError(f"not a plain dense tensor: {type(item).__qualname__} (layout {item.layout})")
            if dtype_name(item.dtype) not in _DTYPES:
                raise EncodeError(f"unsupported dtype {item.dtype}")
            nbytes = item.numel() * item.element_size()
            desc = {"t": "tensor", "dtype": dtype_name(item.dtype), "shape": list(item.shape), "offset": offset, "nbytes": nbytes}
            found.append(item)
            offset += -(-nbytes // _ALIGN) * _ALIGN
            return desc
        if type(item) in (list, tuple):  # a subclass (a lazy tuple) is not a plain value
            return {"t": type(item).__name__, "items": [walk(x) for x in item]}
        if isinstance(item, (list, tuple)):
            raise EncodeError(f"not a plain list or tuple: {type(item).__qualname__}")
        return encode(item)[0]

    description = walk(value)
    return description, found, offset


def _tensor_descs(description: Any) -> list[dict[str, Any]]:
    if not isinstance(description, dict):
        return []
    if description.get("t") == "tensor":
        return [description]
    return [d for item in description.get("items", []) for d in _tensor_descs(item)]


class SharedValue:
    """A value made in shared memory by the trusted side: `views` are its tensors there (write them
    to refresh the contents), `description` and `fds` are what the other process needs to map it.
    On the GPU the memory is a `cuda_ipc.SharedBlock` of its own (one per value, i.e. per input set)."""

    def __init__(self, value: Any, device: torch.device) -> None:
        self.description, tensors, nbytes = _layout(value)
        self.fds: list[int] = []
        self.block: Any = None
        self._mapping: Any = None
        if device.type == "cuda":
            from .cuda_ipc import SharedBlock

            self.block = SharedBlock(nbytes, device)
            backing = self.block.bytes
            handle = self.block.handle()
        else:
            from . import shm

            fd = shm.create(max(nbytes, 1), "referee-inputs")
            self.fds = [fd]
            self._mapping = shm.map_shared(fd, max(nbytes, 1))
            backing = torch.frombuffer(self._mapping, dtype=torch.uint8)
        self.views: list[torch.Tensor] = []
        for desc, tensor in zip(_tensor_descs(self.description), tensors, strict=True):
            view = (
                backing[desc["offset"] : desc["offset"] + desc["nbytes"]].view(tensor.dtype).view(tensor.shape)
                if desc["nbytes"]
                else (torch.empty(tensor.shape, dtype=tensor.dtype, device=device))
            )
            with torch.no_grad():  # an input made with requires_grad is shared as data
                view.copy_(tensor)
            self.views.append(view)
            if device.type == "cuda":
                desc.update(ipc=handle, strides=list(view.stride()), offset=desc["offset"])
            else:
                desc["fd"] = 0
        self.value = _rebuild(self.description, iter(self.views))
        self._settle(device)

    @staticmethod
    def _settle(device: torch.device) -> None:
        """The other process reads this memory with no ordering against this process's stream:
        the writes must be done before its description leaves."""
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def refresh(self, value: Any) -> None:
        """Overwrite the contents in place (same shapes): what the candidate maps changes under it."""
        _, tensors, _ = _layout(value)
        with torch.no_grad():
            for view, tensor in zip(self.views, tensors, strict=True):
                view.copy_(tensor)
        if self.views:
            self._settle(self.views[0].device)

    def take_fds(self) -> list[int]:
        """Duplicates of the descriptors to send (this object keeps its own until `release`)."""
        return [os.dup(fd) for fd in self.fds]

    def release(self) -> None:
        self.views, self.value = [], None
        for fd in self.fds:
            os.close(fd)
        self.fds = []
        self._mapping = None  # unmapped when the last view is gone
        if self.block is not None:
            self.block.free()
            self.block = None


def _rebuild(description: Any, tensors: Any) -> Any:
    kind = description["t"]
    if kind == "tensor":
        return next(tensors)
    if kind in ("list", "tuple"):
        items = [_rebuild(item, tensors) for item in description["items"]]
        return items if kind == "list" else tuple(items)
    return decode(description, b"")


class Attached:
    """Shared values mapped into this process; `close` lets go of the memory (CUDA handles too)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.opened: Any = None
        self.mappings: list[Any] = []

    def attach(self, description: Any, fds: list[int], *, writable: bool = False, sealed: bool = False) -> Any:
        """Rebuild a shared value. `writable`: a shared mapping (the candidate's view of its inputs,
        whose writes the reference sees); else a private copy-on-write one. `sealed`: the memory must
        be sealed against writes (what an untrusted process sends). Tensors described by fd are on
        the CPU; by IPC handle, on this device. Malformed descriptions raise EncodeError."""
        from . import shm

        maps: dict[int, torch.Tensor] = {}

        def memory(desc: dict[str, Any]) -> torch.Tensor:
            if "ipc" in desc:
                if self.device.type != "cuda":
                    raise EncodeError("a CUDA handle sent to a CPU process")
                if self.opened is None:
                    from .cuda_ipc import Opened

                    self.opened = Opened(self.device)
                return self.opened.open(desc["ipc"])[1]
            index = desc.get("fd")
            if type(index) is not int or not 0 <= index < len(fds):
                raise EncodeError("a tensor names no descriptor sent with it")
            if index not in maps:
                size = shm.size(fds[index], sealed=sealed)
                if size == 0:
                    maps[index] = torch.empty(0, dtype=torch.uint8)
                else:
                    mapping = shm.map_shared(fds[index], size) if writable else shm.map_private(fds[index], size)
                    self.mappings.append(mapping)
                    maps[index] = torch.frombuffer(mapping, dtype=torch.uint8)
            return maps[index]

        def walk(desc: Any) -> Any:
            if not isinstance(desc, dict):
                raise EncodeError("malformed value description")
            kind = desc.get("t")
            if kind == "tensor":
                shape = desc.get("shape")
                if isinstance(shape, list) and 0 in shape:  # empty: nothing to map
                    return _view(desc, torch.empty(0, dtype=torch.uint8, device=self.device if "ipc" in desc else "cpu"))
                return _view(desc, memory(desc))
            if kind in ("list", "tuple"):
                items = desc.get("items")
                if not isinstance(items, list):
                    raise EncodeError("malformed value description")
                values = [walk(x) for x in items]
                return values if kind == "list" else tuple(values)
            return decode(desc, b"")

        try:
            return walk(description)
        except EncodeError:
            raise
        except Exception as exc:  # the other side controls these descriptions
            raise EncodeError(f"malformed shared value: {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        if self.opened is not None:
            self.opened.close()
            self.opened = None
        self.mappings = []  # unmapped once no tensor views them


def _view(desc: dict[str, Any], memory: torch.Tensor) -> torch.Tensor:
    dtype = _DTYPES[desc["dtype"]]
    shape, offset = desc["shape"], desc["offset"]
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape) or type(offset) is not int or offset < 0:
        raise EncodeError("tensor shape and offset must be non-negative ints")
    size = torch.empty((), dtype=dtype).element_size()
    numel = math.prod(shape)
    strides = desc.get("strides")
    if strides is None:
        strides = [math.prod(shape[i + 1 :]) for i in range(len(shape))]
    if not isinstance(strides, list) or len(strides) != len(shape) or not all(type(s) is int and s >= 0 for s in strides):
        raise EncodeError("tensor strides must be non-negative ints, one per dimension")
    if offset % size:
        raise EncodeError("tensor offset is not aligned to its dtype")
    if numel == 0:
        return torch.empty(shape, dtype=dtype, device=memory.device)
    span = (sum((d - 1) * s for d, s in zip(shape, strides, strict=True)) + 1) * size
    if offset + span > memory.numel():
        raise EncodeError("tensor bytes out of range of the memory it names")
    if "ipc" not in desc and desc.get("nbytes") != numel * size:
        raise EncodeError("tensor byte count does not match its shape")
    return memory[offset : offset + span].view(dtype).as_strided(shape, strides)


def export_outputs(value: Any, device: torch.device) -> tuple[Any, list[int]]:
    """The candidate side: describe its outputs for the reference to read. On the GPU, by IPC handle
    of the allocations they live in (no copy); on the CPU, copied into one memfd, sealed. Raises
    EncodeError for anything but plain tensors in a plain tuple or list."""
    from . import shm

    description, tensors, nbytes = _layout(value)
    descs = _tensor_descs(description)
    if device.type == "cuda":
        from .cuda_ipc import export_handle

        for desc, tensor in zip(descs, tensors, strict=True):
            if tensor.device.type != "cuda":
                raise EncodeError("an output is not on the GPU")
            if not tensor.numel():
                desc.update(ipc=None, strides=list(tensor.stride()))
                continue
            handle, _, base_offset = export_handle(tensor)
            desc.update(
                ipc=handle, offset=base_offset + tensor.storage_offset() * tensor.element_size(), strides=list(tensor.stride())
            )
        return description, []
    fd = shm.create(max(nbytes, 1), "referee-outputs")
    try:
        for desc, tensor in zip(descs, tensors, strict=True):
            desc["fd"] = 0
            if desc["nbytes"]:
                flat = tensor.detach().contiguous().reshape(-1).cpu().view(torch.uint8)
                shm.write_at(fd, desc["offset"], flat.numpy().data)
        shm.seal(fd)
    except BaseException:
        os.close(fd)
        raise
    return description, [fd]


def share_bytes(value: Any) -> tuple[Any, int]:
    """`encode` into a sealed memfd (small values, and what the engine's cache keeps)."""
    from . import shm

    description, data = encode(value)
    return description, shm.from_bytes(data, "referee-value")


def decode_fd(description: Any, fd: int, device: str | torch.device = "cpu", limit: int = 1 << 40) -> Any:
    """`decode` from a sealed memfd made by `share_bytes` (copies onto `device`)."""
    from . import shm

    size = shm.size(fd, sealed=True)
    if size > limit:
        raise EncodeError("shared value too large")
    if size == 0:
        return decode(description, b"", device)
    mapping = shm.map_private(fd, size)
    return decode(description, mapping, device)


def renumber(description: Any, base: int) -> Any:
    """The description with every "fd" index moved by `base` (values sent together in one frame)."""
    if not isinstance(description, dict):
        return description
    if description.get("t") == "tensor" and "fd" in description:
        return {**description, "fd": description["fd"] + base}
    if "items" in description:
        return {**description, "items": [renumber(item, base) for item in description["items"]]}
    return description
