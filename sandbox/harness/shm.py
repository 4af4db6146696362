"""Shared memory for the data plane (stdlib only: the engine, which never imports torch, uses it too).

A tensor value crosses between processes as a memfd (anonymous shared memory, passed as a file
descriptor over the data socket beside the channel's pipes), never as bytes in a pipe. Whoever
sends outputs it cannot be trusted about seals them (no more writes, no resizing), so what the
reader maps cannot change under it."""

from __future__ import annotations

import fcntl
import mmap
import os
import stat

SEALS = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
MAX_BYTES = 1 << 40


class SharedMemoryError(ValueError):
    """A descriptor that is not the shared memory it was described as."""


def create(nbytes: int, name: str = "referee") -> int:
    """A new memfd of `nbytes` (zero-filled, close-on-exec, sealable)."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, nbytes)
    except BaseException:
        os.close(fd)
        raise
    return fd


def from_bytes(data: bytes | bytearray | memoryview, name: str = "referee", *, seal: bool = True) -> int:
    """A memfd holding `data` (written through the descriptor: no mapping left behind), sealed."""
    fd = create(len(data), name)
    try:
        write_at(fd, 0, data)
        if seal:
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_at(fd: int, offset: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def seal(fd: int) -> None:
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, SEALS)


def size(fd: int, *, sealed: bool = False) -> int:
    """The size of a regular-file descriptor (a memfd); with `sealed`, it must also be sealed
    against writes and resizing (the sender cannot change what the reader maps)."""
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode):
        raise SharedMemoryError("the descriptor is not shared memory")
    if sealed:
        try:
            seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        except OSError as exc:
            raise SharedMemoryError("the descriptor cannot be sealed (not a memfd)") from exc
        if seals & (fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW) != (
            fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
        ):
            raise SharedMemoryError("the shared memory is not sealed against writes")
    if status.st_size > MAX_BYTES:
        raise SharedMemoryError("the shared memory is too large")
    return status.st_size


def map_shared(fd: int, nbytes: int) -> mmap.mmap:
    """A writable shared mapping (the trusted maker's, or the candidate's view of its inputs)."""
    return mmap.mmap(fd, nbytes, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)


def map_private(fd: int, nbytes: int) -> mmap.mmap:
    """A copy-on-write mapping: reads see the file, writes stay in this process."""
    return mmap.mmap(fd, nbytes, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)


def read_all(fd: int, limit: int) -> bytes:
    """The contents of a sealed memfd of at most `limit` bytes (the engine's cache records)."""
    nbytes = size(fd, sealed=True)
    if nbytes > limit:
        raise SharedMemoryError(f"{nbytes} bytes, over the limit of {limit}")
    return os.pread(fd, nbytes, 0) if nbytes else b""
