"""The command loop of a harness process: read the key, take a role, answer the parent's commands.

Entered from `python -m harness` (a fresh process) or from a child of the warm pool's zygote.
Replies are {"ok": true, ...} or {"ok": false, "error": {"kind": ..., ...}}."""

from __future__ import annotations

import os
import sys
from typing import Any

from .protocol import Channel, ChannelClosed, read_key


def serve(role_name: str, read_fd: int, write_fd: int, key_fd: int, data_fd: int | None = None) -> int:
    """Answer the parent's commands as `role_name` (also entered by a child of the warm pool's zygote)."""
    # The key is read and its pipe closed before any submitted code is loaded.
    key = read_key(key_fd)
    channel = Channel(read_fd, write_fd, key, is_parent=False, data_fd=data_fd)
    del key

    if role_name == "reference":
        from .reference import ProblemError, ReferenceRole

        role: Any = ReferenceRole()
        known_failures: tuple[type[BaseException], ...] = (ProblemError,)
    else:
        from .candidate import CandidateFailed, CandidateRole

        role = CandidateRole()
        known_failures = (CandidateFailed,)
    from .runtime import error_reply

    streams = (sys.stdout, sys.stderr)  # bound now: the candidate may replace sys.stdout
    # Bound now, before any submitted code runs: patching the role's class later changes nothing here.
    handlers = {name.removeprefix("cmd_"): getattr(role, name) for name in dir(role) if name.startswith("cmd_")}
    while True:
        try:
            header, payload = channel.recv()
        except ChannelClosed:
            return 0
        command = header.get("cmd")
        if command == "exit":
            channel.send({"ok": True})
            return 0
        handler = handlers.get(str(command))
        data: bytes = b""
        received = channel.take_fds()  # shared memory sent with the command; the role maps what it needs
        header["fds"] = received
        if handler is None:
            reply: dict[str, Any] = {"ok": False, "error": {"kind": "infrastructure_error", "message": f"unknown command {command!r}"}}
        else:
            try:
                reply, data = handler(header, payload)
            except known_failures as exc:
                reply = getattr(exc, "reply", None) or error_reply("problem_error", exc, getattr(role, "keep_file", None))
            except Exception as exc:
                reply = error_reply("infrastructure_error", exc)
        reply["cmd"] = command
        for fd in received:  # mappings outlive their descriptors
            try:
                os.close(fd)
            except OSError:
                pass
        outgoing = reply.pop("fds", None) or []
        for stream in streams:  # what the candidate printed reaches the evidence even if it is killed later
            try:
                stream.flush()
            except Exception:
                pass
        try:
            channel.send(reply, data, fds=outgoing)
        finally:
            for fd in outgoing:
                os.close(fd)
