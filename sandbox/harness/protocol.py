"""Framed, authenticated messages between the trusted parent and a harness process.

Stdlib only: the parent (which never imports torch) and the harness share this module.

A frame is a 4-byte header length, a JSON header, an 8-byte payload length, the payload, and a
32-byte HMAC-SHA256 over (direction, sequence number, header, payload). Each direction keeps its
own sequence number, so frames cannot be replayed, reordered or reflected. The key reaches the
child over a pipe it reads once and closes before any untrusted code is imported; bytes that a
candidate writes to the descriptor without the key fail authentication.

Tensors never travel in a frame: a frame may carry file descriptors (shared memory, see shm.py)
over a Unix socket beside the pipes (the data socket). The sender sends them first, with the
frame's sequence number; the frame's header (authenticated) says how many came, and the receiver
takes them from the data socket only after the frame authenticates, checking the sequence number.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import select
import socket
import struct
import time
from typing import Any

KEY_BYTES = 32
MAX_HEADER_BYTES = 4 << 20
MAX_PAYLOAD_BYTES = 16 << 30
_CHUNK = 1 << 20
_LENGTHS = struct.Struct(">IQ")
_FD_TOKEN = struct.Struct(">QI")
MAX_FDS = 64  # per frame
_dumps = json.dumps  # bound before any candidate code is imported (its process shares this module)
_loads = json.loads


class ProtocolError(Exception):
    """The peer sent something that is not a valid, authenticated frame."""


class ChannelTimeout(ProtocolError):
    """The peer did not answer before the deadline."""


class ChannelClosed(ProtocolError):
    """The peer closed its end (usually: the process died)."""


def _wait(fd: int, for_write: bool, deadline: float | None) -> None:
    if deadline is None:
        return
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise ChannelTimeout("deadline passed")
    ready = select.select([], [fd], [], remaining) if for_write else select.select([fd], [], [], remaining)
    if not (ready[1] if for_write else ready[0]):
        raise ChannelTimeout("deadline passed")


class Channel:
    """One end of a pair of pipes. `is_parent` picks the direction tags used in the MAC."""

    def __init__(self, read_fd: int, write_fd: int, key: bytes, *, is_parent: bool, data_fd: int | None = None) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError("channel key must be 32 bytes")
        self._read_fd = read_fd
        self._write_fd = write_fd
        self._key = key
        self._send_tag = b"P" if is_parent else b"C"
        self._recv_tag = b"C" if is_parent else b"P"
        self._send_seq = 0
        self._recv_seq = 0
        self._data = socket.socket(fileno=data_fd) if data_fd is not None else None
        self.received_fds: list[int] = []  # descriptors that came with the last frame; the caller owns them

    def take_fds(self) -> list[int]:
        fds, self.received_fds = self.received_fds, []
        return fds

    def close_received(self) -> None:
        for fd in self.take_fds():
            try:
                os.close(fd)
            except OSError:
                pass

    def _mac(self, tag: bytes, seq: int, header: bytes, payload: bytes | bytearray | memoryview) -> bytes:
        mac = hmac.new(self._key, tag + seq.to_bytes(8, "big"), hashlib.sha256)
        mac.update(header)
        mac.update(payload)
        return mac.digest()

    def send(
        self,
        header: dict[str, Any],
        payload: bytes | memoryview = b"",
        *,
        deadline: float | None = None,
        fds: list[int] | tuple[int, ...] = (),
    ) -> None:
        if fds:
            if self._data is None or len(fds) > MAX_FDS:
                raise ProtocolError(f"cannot send {len(fds)} descriptors on this channel")
            header = {**header, "_fds": len(fds)}
            _wait(self._data.fileno(), True, deadline)
            try:
                socket.send_fds(self._data, [_FD_TOKEN.pack(self._send_seq, len(fds))], list(fds))
            except (BrokenPipeError, ConnectionResetError) as exc:
                raise ChannelClosed("peer closed the data socket") from exc
            except OSError as exc:
                raise ProtocolError(f"cannot send descriptors: {exc}") from exc
        header_bytes = _dumps(header, separators=(",", ":")).encode()
        payload = memoryview(payload).cast("B")
        mac = self._mac(self._send_tag, self._send_seq, header_bytes, payload)
        self._send_seq += 1
        self._write_all(_LENGTHS.pack(len(header_bytes), len(payload)) + header_bytes, deadline)
        self._write_all(payload, deadline)
        self._write_all(mac, deadline)

    def recv(self, *, deadline: float | None = None) -> tuple[dict[str, Any], bytearray]:
        header_len, payload_len = _LENGTHS.unpack(self._read_exact(_LENGTHS.size, deadline))
        if header_len > MAX_HEADER_BYTES or payload_len > MAX_PAYLOAD_BYTES:
            raise ProtocolError(f"frame too large (header {header_len} B, payload {payload_len} B)")
        header_bytes = bytes(self._read_exact(header_len, deadline))
        payload = self._read_exact(payload_len, deadline)
        mac = bytes(self._read_exact(hashlib.sha256().digest_size, deadline))
        expected = self._mac(self._recv_tag, self._recv_seq, header_bytes, payload)
        if not hmac.compare_digest(mac, expected):
            raise ProtocolError("frame failed authentication")
        seq = self._recv_seq
        self._recv_seq += 1
        try:
            header = _loads(header_bytes)
        except ValueError as exc:
            raise ProtocolError(f"frame header is not JSON: {exc}") from exc
        if not isinstance(header, dict):
            raise ProtocolError("frame header is not an object")
        self.close_received()  # the previous frame's, if nobody took them
        count = header.pop("_fds", 0)
        if count:
            self.received_fds = self._recv_fds(seq, count, deadline)
        return header, payload

    def _recv_fds(self, seq: int, count: Any, deadline: float | None) -> list[int]:
        if self._data is None or type(count) is not int or not 0 < count <= MAX_FDS:
            raise ProtocolError("a frame announced descriptors this channel cannot carry")
        while True:  # stray messages (sent without a frame) are dropped, their descriptors closed
            _wait(self._data.fileno(), False, deadline if deadline is not None else time.monotonic() + 30)
            try:
                body, fds, flags, _ = socket.recv_fds(self._data, _FD_TOKEN.size, MAX_FDS)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise ChannelClosed(f"the data socket failed: {exc}") from exc
            if not body:
                raise ChannelClosed("peer closed the data socket")
            try:
                token = _FD_TOKEN.unpack(body) if len(body) == _FD_TOKEN.size else None
            except struct.error:
                token = None
            if token == (seq, count) and len(fds) == count and not flags & socket.MSG_CTRUNC:
                return fds
            for fd in fds:
                os.close(fd)
            if token is not None and token[0] > seq:
                raise ProtocolError("descriptors out of order")

    def _write_all(self, data: bytes | memoryview, deadline: float | None) -> None:
        view = memoryview(data).cast("B")
        while view:
            _wait(self._write_fd, True, deadline)
            try:
                written = os.write(self._write_fd, view[:_CHUNK])
            except BlockingIOError:
                continue
            except BrokenPipeError as exc:
                raise ChannelClosed("peer closed the channel") from exc
            view = view[written:]

    def _read_exact(self, size: int, deadline: float | None) -> bytearray:
        buffer = bytearray(size)
        view = memoryview(buffer)
        got = 0
        while got < size:
            _wait(self._read_fd, False, deadline)
            try:
                n = os.readv(self._read_fd, [view[got : got + _CHUNK]])
            except BlockingIOError:
                continue
            if n == 0:
                raise ChannelClosed("peer closed the channel")
            got += n
        return buffer


def data_socketpair() -> tuple[int, int]:
    """(parent's end, child's end) of a data socket: SOCK_SEQPACKET keeps one message per frame."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    return parent.detach(), child.detach()


def read_key(fd: int) -> bytes:
    """Read the channel key from `fd` and close it (the child does this before loading anything)."""
    key = b""
    while len(key) < KEY_BYTES:
        chunk = os.read(fd, KEY_BYTES - len(key))
        if not chunk:
            break
        key += chunk
    os.close(fd)
    if len(key) != KEY_BYTES:
        raise ProtocolError("short channel key")
    return key
