"""Entry point: `python -m harness --role reference|candidate --read-fd R --write-fd W --key-fd K`.

Serves commands from the parent over the authenticated channel until told to exit or the channel
closes. Replies are {"ok": true, ...} or {"ok": false, "error": {"kind": ..., ...}}."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from .protocol import Channel, ChannelClosed, read_key


def main() -> int:
    parser = argparse.ArgumentParser(prog="harness")
    parser.add_argument("--role", choices=("reference", "candidate"), required=True)
    parser.add_argument("--read-fd", type=int, required=True)
    parser.add_argument("--write-fd", type=int, required=True)
    parser.add_argument("--key-fd", type=int, required=True)
    args = parser.parse_args()

    # The key is read and its pipe closed before torch, triton or any submitted code is loaded.
    key = read_key(args.key_fd)
    channel = Channel(args.read_fd, args.write_fd, key, is_parent=False)
    del key

    if args.role == "reference":
        from .reference import ProblemError, ReferenceRole

        role: Any = ReferenceRole()
        known_failures: tuple[type[BaseException], ...] = (ProblemError,)
    else:
        from .candidate import CandidateFailed, CandidateRole

        role = CandidateRole()
        known_failures = (CandidateFailed,)
    from .runtime import error_reply

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
        channel.send(reply, data)


if __name__ == "__main__":
    sys.stdout.flush()
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
