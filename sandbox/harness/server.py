"""The command loop of a harness process: read the key, take a role, answer the parent's commands.

Entered from `python -m harness` (a fresh process) or from a child of the warm pool's zygote.
Requests and replies are the typed messages of messages.py; a reply frame is {"ok": true, "cmd": ...,
fields} or {"ok": false, "cmd": ..., "error": {"kind": ..., ...}}."""

from __future__ import annotations

import os
import sys
from typing import Any

from .messages import Message
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
    from .messages import ErrorDetail, ErrorReply, Exit, MessageError, decode_request
    from .runtime import error_reply

    streams = (sys.stdout, sys.stderr)  # bound now: the candidate may replace sys.stdout
    # Bound now, before any submitted code runs: patching the role's class later changes nothing here.
    handlers = {name.removeprefix("cmd_"): getattr(role, name) for name in dir(role) if name.startswith("cmd_")}
    while True:
        try:
            header, _ = channel.recv()
        except ChannelClosed:
            return 0
        command = header.get("cmd")
        received = channel.take_fds()  # shared memory sent with the command; the role maps what it needs
        outgoing: list[int] = []
        reply: Message
        try:
            request = decode_request(role_name, header)
        except MessageError as exc:
            request, reply = None, ErrorReply(error=ErrorDetail(kind="infrastructure_error", message=f"malformed request: {exc}"))
        if isinstance(request, Exit):
            close_all(received)
            channel.send({"ok": True})
            return 0
        if request is not None:
            try:
                reply, outgoing = handlers[request.command](request, received)
            except known_failures as exc:
                reply = getattr(exc, "reply", None) or error_reply("problem_error", exc, getattr(role, "keep_file", None))
            except Exception as exc:
                reply = error_reply("infrastructure_error", exc)
        close_all(received)  # mappings outlive their descriptors
        for stream in streams:  # what the candidate printed reaches the evidence even if it is killed later
            try:
                stream.flush()
            except Exception:
                pass
        if isinstance(reply, ErrorReply):
            close_all(outgoing)
            outgoing = []
        frame = {"ok": not isinstance(reply, ErrorReply), "cmd": command, **reply.to_wire()}
        try:
            channel.send(frame, fds=outgoing)
        finally:
            close_all(outgoing)


def close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
