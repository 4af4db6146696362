"""The authenticated channel (protocol.py) and the tensor codec (tensors.py), in-process over os.pipe."""

from __future__ import annotations

import math
import os
import socket
import struct
import time

import pytest
import torch

from triton_referee.sandbox.harness import shm, tensors
from triton_referee.sandbox.harness.protocol import (
    KEY_BYTES,
    Channel,
    ChannelClosed,
    ChannelTimeout,
    ProtocolError,
    data_socketpair,
    read_key,
)

KEY = bytes(range(KEY_BYTES))


class Pipes:
    """A parent and a child channel over two pipes, plus raw access to the wires."""

    def __init__(self, parent_key: bytes = KEY, child_key: bytes = KEY) -> None:
        self.to_child_r, self.to_child_w = os.pipe()
        self.to_parent_r, self.to_parent_w = os.pipe()
        self.parent = Channel(self.to_parent_r, self.to_child_w, parent_key, is_parent=True)
        self.child = Channel(self.to_child_r, self.to_parent_w, child_key, is_parent=False)

    def take_frame_to_child(self) -> bytes:
        """Read back the raw bytes of the frame the parent just sent (nobody has received it)."""
        os.set_blocking(self.to_child_r, False)
        try:
            return os.read(self.to_child_r, 1 << 20)
        finally:
            os.set_blocking(self.to_child_r, True)

    def close(self) -> None:
        for fd in (self.to_child_r, self.to_child_w, self.to_parent_r, self.to_parent_w):
            try:
                os.close(fd)
            except OSError:
                pass


@pytest.fixture
def pipes():
    created = Pipes()
    yield created
    created.close()


def test_frame_round_trips(pipes):
    header = {"cmd": "run", "trial": "trial0", "nested": {"a": [1, 2.5, None, True]}, "text": "é ✓"}
    payload = os.urandom(3000)
    pipes.parent.send(header, payload)
    got_header, got_payload = pipes.child.recv(deadline=time.monotonic() + 5)
    assert got_header == header
    assert bytes(got_payload) == payload
    # and the other direction, with an empty payload
    pipes.child.send({"ok": True, "cmd": "run"})
    assert pipes.parent.recv(deadline=time.monotonic() + 5) == ({"ok": True, "cmd": "run"}, bytearray())


def test_many_frames_keep_their_order(pipes):
    for index in range(20):
        pipes.parent.send({"i": index}, bytes([index]) * index)
        header, payload = pipes.child.recv(deadline=time.monotonic() + 5)
        assert header == {"i": index} and bytes(payload) == bytes([index]) * index


@pytest.mark.parametrize("where", ["header", "payload", "mac", "length"])
def test_a_flipped_byte_fails_authentication(pipes, where):
    pipes.parent.send({"cmd": "run", "value": 12345}, b"payload-bytes")
    frame = bytearray(pipes.take_frame_to_child())
    header_len = struct.unpack(">I", frame[:4])[0]
    position = {
        "header": 12 + header_len // 2,
        "payload": 12 + header_len + 3,
        "mac": len(frame) - 1,
        "length": 11,  # lowest byte of the payload length: the frame no longer lines up
    }[where]
    frame[position] ^= 0x01
    if where == "length":
        frame += b"\x00" * 64  # enough bytes that the shifted read completes instead of waiting
    os.write(pipes.to_child_w, bytes(frame))
    with pytest.raises(ProtocolError):
        pipes.child.recv(deadline=time.monotonic() + 2)


def test_wrong_key_fails():
    pipes = Pipes(parent_key=KEY, child_key=bytes(KEY_BYTES))
    try:
        pipes.parent.send({"cmd": "setup"}, b"x")
        with pytest.raises(ProtocolError, match="authentication"):
            pipes.child.recv(deadline=time.monotonic() + 2)
    finally:
        pipes.close()


def test_replayed_frame_fails(pipes):
    pipes.parent.send({"cmd": "run", "n": 1}, b"abc")
    frame = pipes.take_frame_to_child()
    os.write(pipes.to_child_w, frame)
    assert pipes.child.recv(deadline=time.monotonic() + 2)[0] == {"cmd": "run", "n": 1}
    os.write(pipes.to_child_w, frame)  # the same authentic frame again
    with pytest.raises(ProtocolError):
        pipes.child.recv(deadline=time.monotonic() + 2)


def test_reordered_frames_fail(pipes):
    pipes.parent.send({"n": 0})
    first = pipes.take_frame_to_child()
    pipes.parent.send({"n": 1})
    second = pipes.take_frame_to_child()
    os.write(pipes.to_child_w, second)
    with pytest.raises(ProtocolError):
        pipes.child.recv(deadline=time.monotonic() + 2)
    assert first != second


def test_reflected_frame_fails(pipes):
    """A frame the parent sent, written back to the parent, is not a frame from the child."""
    pipes.parent.send({"ok": True, "cmd": "run"})
    frame = pipes.take_frame_to_child()
    os.write(pipes.to_parent_w, frame)
    with pytest.raises(ProtocolError):
        pipes.parent.recv(deadline=time.monotonic() + 2)


def test_oversized_header_is_rejected_before_reading_it(pipes):
    os.write(pipes.to_child_w, struct.pack(">IQ", (4 << 20) + 1, 0))
    with pytest.raises(ProtocolError, match="too large"):
        pipes.child.recv(deadline=time.monotonic() + 2)


def test_closed_peer_and_deadline(pipes):
    with pytest.raises(ChannelTimeout):
        pipes.child.recv(deadline=time.monotonic() + 0.2)
    os.close(pipes.to_child_w)
    pipes.to_child_w = -1  # closed here; the fixture must not close the number again
    with pytest.raises(ChannelClosed):
        pipes.child.recv(deadline=time.monotonic() + 2)


def test_key_must_have_the_right_length():
    with pytest.raises(ValueError):
        Channel(0, 1, b"short", is_parent=True)


def test_read_key_reads_and_closes():
    r, w = os.pipe()
    os.write(w, KEY)
    os.close(w)
    assert read_key(r) == KEY
    with pytest.raises(OSError):
        os.fstat(r)
    r, w = os.pipe()
    os.write(w, KEY[:5])
    os.close(w)
    with pytest.raises(ProtocolError):
        read_key(r)


# --- tensor codec --------------------------------------------------------------------------------


def _round_trip(value):
    description, payload = tensors.encode(value)
    return tensors.decode(description, payload)


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return (
            type(b) is torch.Tensor
            and a.dtype == b.dtype
            and a.shape == b.shape
            and torch.equal(
                a.reshape(-1).view(torch.uint8) if a.numel() else a, b.reshape(-1).view(torch.uint8) if b.numel() else b
            )
        )
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return type(a) is type(b) and a == b


@pytest.mark.parametrize(
    "tensor",
    [
        torch.randn(3, 4, dtype=torch.float32),
        torch.randn(17, dtype=torch.bfloat16),
        torch.randn(2, 3, dtype=torch.float16),
        torch.tensor([True, False, True]),
        torch.tensor([-(2**62), 0, 2**62 + 7], dtype=torch.int64),
        torch.tensor(3.5),  # 0-d
        torch.empty(0, 5),  # empty
        torch.tensor([math.nan, -math.inf, -0.0]),
        torch.arange(12, dtype=torch.int32).reshape(3, 4).t(),  # non-contiguous
    ],
    ids=["f32", "bf16", "f16", "bool", "i64", "0d", "empty", "nan-inf-negzero", "non-contiguous"],
)
def test_tensor_round_trip(tensor):
    back = _round_trip(tensor)
    assert _same(tensor.contiguous(), back)


def test_nested_values_round_trip():
    value = [
        torch.randn(2),
        (1, 2.5, [torch.arange(3), True, None, "s"]),
        -7,
        math.inf,
        math.nan,
        torch.float16,
        (),
        [torch.zeros(()), torch.ones(0, dtype=torch.bool)],
    ]
    back = _round_trip(value)
    assert _same(value, back)
    assert isinstance(back[1], tuple) and isinstance(back[1][2], list)
    assert back[5] is torch.float16


def test_decoded_tensors_own_their_memory():
    x = torch.randn(8)
    description, payload = tensors.encode([x])
    buffer = bytearray(payload)
    (back,) = tensors.decode(description, buffer)
    buffer[:] = bytes(len(buffer))
    assert torch.equal(back, x)


@pytest.mark.parametrize("offset", [-4, 1, 10**12])
def test_decode_rejects_out_of_range_offsets(offset):
    description, payload = tensors.encode(torch.randn(4))
    description = {**description, "offset": offset}
    with pytest.raises(tensors.EncodeError):
        tensors.decode(description, payload)


def test_decode_rejects_a_byte_count_that_does_not_match_the_shape():
    description, payload = tensors.encode(torch.randn(4))
    with pytest.raises(tensors.EncodeError):
        tensors.decode({**description, "shape": [8]}, payload + bytes(16))
    with pytest.raises(tensors.EncodeError):
        tensors.decode({**description, "nbytes": 8}, payload)


def test_decode_rejects_unknown_kinds():
    with pytest.raises(tensors.EncodeError):
        tensors.decode({"t": "pickle", "v": "cos\nsystem\n"}, b"")


@pytest.mark.parametrize(
    "change",
    [{"dtype": "float8_evil"}, {"shape": [-2, -2]}, {"shape": "abc"}, {"t": None}],
    ids=["unknown-dtype", "negative-dims", "shape-not-a-list", "no-kind"],
)
def test_decode_rejects_malformed_descriptions_with_encode_error(change):
    """The reference process decodes descriptions that the candidate's process produced (and the
    candidate can patch its encoder), so every malformed description must raise EncodeError, the
    one error the engine can attribute to the candidate, not KeyError/RuntimeError/TypeError."""
    description, payload = tensors.encode(torch.randn(4))
    with pytest.raises(tensors.EncodeError):
        tensors.decode({**description, **change}, payload)


def test_encode_rejects_tensor_subclasses():
    class Lazy(torch.Tensor):
        pass

    with pytest.raises(tensors.EncodeError):
        tensors.encode(torch.zeros(3).as_subclass(Lazy))
    with pytest.raises(tensors.EncodeError):
        tensors.encode([torch.zeros(1), (torch.zeros(2).as_subclass(Lazy),)])
    with pytest.raises(tensors.EncodeError):
        tensors.encode(torch.nn.Parameter(torch.zeros(2)))


def test_encode_rejects_non_dense_and_unknown_values():
    with pytest.raises(tensors.EncodeError):
        tensors.encode(torch.zeros(3, 3).to_sparse())
    with pytest.raises(tensors.EncodeError):
        tensors.encode(object())
    with pytest.raises(tensors.EncodeError):
        tensors.encode({"a": 1})


# --- descriptors beside the frames (the data plane's shared memory) ---------------------------------


def _with_data_socket() -> tuple[Channel, Channel, list[int]]:
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    data_parent, data_child = data_socketpair()
    parent = Channel(to_parent_r, to_child_w, KEY, is_parent=True, data_fd=data_parent)
    child = Channel(to_child_r, to_parent_w, KEY, is_parent=False, data_fd=data_child)
    return parent, child, [to_child_r, to_child_w, to_parent_r, to_parent_w, data_parent, data_child]


def test_descriptors_travel_with_their_frame_and_no_bytes_do() -> None:
    parent, child, fds = _with_data_socket()
    memory = shm.from_bytes(b"\x01" * 4096)
    parent.send({"cmd": "run"}, fds=[memory], deadline=time.monotonic() + 5)
    header, payload = child.recv(deadline=time.monotonic() + 5)
    (received,) = child.take_fds()
    assert header == {"cmd": "run"} and payload == bytearray()
    assert os.pread(received, 8, 0) == b"\x01" * 8 and shm.size(received, sealed=True) == 4096
    # A frame without descriptors leaves none behind; one not taken is closed by the next frame.
    parent.send({"cmd": "a"}, fds=[memory], deadline=time.monotonic() + 5)
    parent.send({"cmd": "b"}, deadline=time.monotonic() + 5)
    child.recv(deadline=time.monotonic() + 5)
    (left,) = child.received_fds
    child.recv(deadline=time.monotonic() + 5)
    assert child.received_fds == []
    with pytest.raises(OSError):
        os.fstat(left)
    for fd in (*fds, memory, received):
        os.close(fd)


def test_forged_descriptor_messages_are_dropped_or_break_the_channel() -> None:
    parent, child, fds = _with_data_socket()
    stray = shm.create(16)
    forger = socket.socket(fileno=os.dup(fds[5]))  # the child's end of the data socket, written directly
    socket.send_fds(forger, [struct.pack(">QI", 0, 2)], [stray, stray])  # not what the frame announces
    child.send({"ok": True}, fds=[stray], deadline=time.monotonic() + 5)
    header, _ = parent.recv(deadline=time.monotonic() + 5)
    assert header == {"ok": True} and len(parent.take_fds()) == 1  # the stray message dropped, the frame's taken
    socket.send_fds(forger, [struct.pack(">QI", 9, 1)], [stray])  # a sequence number from the future
    child.send({"ok": True}, fds=[stray], deadline=time.monotonic() + 5)
    with pytest.raises(ProtocolError):
        parent.recv(deadline=time.monotonic() + 5)
    with pytest.raises(ProtocolError):  # a channel without a data socket carries no descriptors
        Channel(fds[0], fds[3], KEY, is_parent=False).send({"ok": True}, fds=[stray])
    forger.close()
    for fd in (*fds, stray):
        os.close(fd)
