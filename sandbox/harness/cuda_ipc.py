"""CUDA IPC for the GPU data plane, through the driver API (libcuda, ctypes).

Shared allocations never come from torch's caching allocator: a CUDA IPC handle exposes the whole
allocation it names, and a caching-allocator segment can hold anything (expected outputs, other
input sets, the reference's parameters). `SharedBlock` is one cuMemAlloc of its own per input set;
its handle reaches exactly those bytes. The candidate's outputs live in the candidate's allocator:
exporting a handle to their segment exposes only the candidate's own memory, to the trusted side.

Never exercised on a CPU-only machine: tests/gpu/test_gpu_data_plane.py checks it on a GPU."""

from __future__ import annotations

import ctypes
from typing import Any

import torch

CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS = 1
HANDLE_BYTES = 64
GRANULE = 2 << 20  # the driver maps IPC allocations in 2 MiB pages: a block fills its pages itself


class IpcError(RuntimeError):
    """A driver call failed, or a handle or description does not fit its allocation."""


class _Handle(ctypes.Structure):
    _fields_ = [("reserved", ctypes.c_char * HANDLE_BYTES)]


_driver: Any = None


def _cuda() -> Any:
    global _driver
    if _driver is None:
        lib = ctypes.CDLL("libcuda.so.1")
        lib.cuMemAlloc_v2.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_size_t]
        lib.cuMemFree_v2.argtypes = [ctypes.c_uint64]
        lib.cuIpcGetMemHandle.argtypes = [ctypes.POINTER(_Handle), ctypes.c_uint64]
        lib.cuIpcOpenMemHandle_v2.argtypes = [ctypes.POINTER(ctypes.c_uint64), _Handle, ctypes.c_uint]
        lib.cuIpcCloseMemHandle.argtypes = [ctypes.c_uint64]
        lib.cuMemGetAddressRange_v2.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_size_t), ctypes.c_uint64]
        _driver = lib
    return _driver


def _check(result: int, what: str) -> None:
    if result != 0:
        raise IpcError(f"{what} failed (CUresult {result})")


class _Interface:
    """A device byte range as a __cuda_array_interface__ object; torch.as_tensor wraps it without
    copying, and the tensor keeps this object (not the memory) alive."""

    def __init__(self, pointer: int, nbytes: int) -> None:
        self.__cuda_array_interface__ = {
            "shape": (nbytes,),
            "typestr": "|u1",
            "data": (pointer, False),
            "strides": None,
            "version": 3,
        }


def _bytes_tensor(pointer: int, nbytes: int, device: torch.device) -> torch.Tensor:
    if nbytes == 0:
        return torch.empty(0, dtype=torch.uint8, device=device)
    return torch.as_tensor(_Interface(pointer, nbytes), device=device)


class SharedBlock:
    """One allocation of its own, to be shared with the candidate (inputs of one set)."""

    def __init__(self, nbytes: int, device: torch.device) -> None:
        torch.cuda.current_device()
        self.device = device
        self.nbytes = -(-max(nbytes, 1) // GRANULE) * GRANULE
        pointer = ctypes.c_uint64()
        _check(_cuda().cuMemAlloc_v2(ctypes.byref(pointer), self.nbytes), "cuMemAlloc")
        self.pointer = pointer.value
        self.bytes = _bytes_tensor(self.pointer, self.nbytes, device)
        # Fresh device memory may hold what this process freed earlier (expected outputs, other
        # sets): zeroed whole, padding included, before its handle exists.
        self.bytes.zero_()

    def handle(self) -> str:
        handle = _Handle()
        _check(_cuda().cuIpcGetMemHandle(ctypes.byref(handle), self.pointer), "cuIpcGetMemHandle")
        return bytes(handle).hex()  # all 64 bytes (the field itself would stop at the first NUL)

    def free(self) -> None:
        if self.pointer:
            # Zeroed first: a candidate may keep its mapping open; what it then sees is nothing. (The
            # driver keeps the pages of an allocation another process maps until it unmaps them,
            # so they are not handed out again meanwhile: tests/gpu/test_gpu_data_plane.py checks.)
            self.bytes.zero_()
            torch.cuda.synchronize(self.device)
            self.bytes = None  # type: ignore[assignment]
            _cuda().cuMemFree_v2(self.pointer)
            self.pointer = 0


def export_handle(tensor: torch.Tensor) -> tuple[str, int, int]:
    """(handle, allocation size, byte offset of the tensor's storage offset 0) for a device tensor
    of this process: the handle of the whole allocation it lives in."""
    base, size = ctypes.c_uint64(), ctypes.c_size_t()
    pointer = tensor.data_ptr() - int(tensor.storage_offset()) * tensor.element_size()
    _check(_cuda().cuMemGetAddressRange_v2(ctypes.byref(base), ctypes.byref(size), pointer), "cuMemGetAddressRange")
    handle = _Handle()
    _check(_cuda().cuIpcGetMemHandle(ctypes.byref(handle), base.value), "cuIpcGetMemHandle")
    return bytes(handle).hex(), int(size.value), pointer - base.value


class Opened:
    """Allocations of another process, opened by handle (each once), closed together."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.blocks: dict[str, tuple[int, int, torch.Tensor]] = {}  # handle -> (pointer, size, bytes)

    def open(self, handle: Any) -> tuple[int, torch.Tensor]:
        if handle in self.blocks:
            _, known_size, data = self.blocks[handle]
            return known_size, data
        if not isinstance(handle, str) or len(handle) != 2 * HANDLE_BYTES:
            raise IpcError("malformed IPC handle")
        try:
            raw = _Handle.from_buffer_copy(bytes.fromhex(handle))
        except ValueError as exc:
            raise IpcError("malformed IPC handle") from exc
        pointer = ctypes.c_uint64()
        _check(
            _cuda().cuIpcOpenMemHandle_v2(ctypes.byref(pointer), raw, CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS), "cuIpcOpenMemHandle"
        )
        base, size = ctypes.c_uint64(), ctypes.c_size_t()
        _check(_cuda().cuMemGetAddressRange_v2(ctypes.byref(base), ctypes.byref(size), pointer.value), "cuMemGetAddressRange")
        data = _bytes_tensor(pointer.value, int(size.value), self.device)
        self.blocks[handle] = (pointer.value, int(size.value), data)
        return int(size.value), data

    def close(self) -> None:
        if not self.blocks:
            return
        torch.cuda.synchronize(self.device)
        for pointer, _, _ in self.blocks.values():
            _cuda().cuIpcCloseMemHandle(pointer)
        self.blocks.clear()
