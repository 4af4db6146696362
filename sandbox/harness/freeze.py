"""Stopping a harness process and everything it started (SIGSTOP), and letting it go on.

Stdlib only: the engine uses it for fresh processes, the warm pool's zygote for its children. The
tree is found through /proc (parent links) from the root pid, and its process group and session
are signalled too, so a thread or a child of the candidate's cannot keep running while the
reference is timed. `stop_tree` waits until the kernel reports every member stopped."""

from __future__ import annotations

import os
import signal
import time
from typing import Any


def _stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, pgrp, session) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2 :].split()
    return fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[3])


def tree(root: int) -> dict[int, str]:
    """pid -> state of `root`, its descendants, and the members of its process group and session."""
    table: dict[int, tuple[str, int, int, int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            found = _stat(int(entry.name))
            if found is not None:
                table[int(entry.name)] = found
    members = {root} if root in table else set()
    changed = True
    while changed:
        changed = False
        for pid, (_, ppid, pgrp, session) in table.items():
            if pid not in members and (ppid in members or pgrp == root or session == root):
                members.add(pid)
                changed = True
    return {pid: table[pid][0] for pid in members}


def _signal_all(root: int, signum: int) -> dict[int, str]:
    members = tree(root)
    for pid in members:
        try:
            os.kill(pid, signum)
        except OSError:
            pass
    return members


def stop_tree(root: int, wait_s: float = 2.0) -> dict[str, Any]:
    """SIGSTOP the tree (again, for anything it started meanwhile) until every member is stopped."""
    deadline = time.monotonic() + wait_s
    while True:
        _signal_all(root, signal.SIGSTOP)
        states = tree(root)
        stopped = all(state in "TtZX" for state in states.values())
        if stopped or time.monotonic() > deadline:
            return {"stopped": stopped, "states": {str(pid): state for pid, state in sorted(states.items())}}
        time.sleep(0.002)


def continue_tree(root: int) -> None:
    _signal_all(root, signal.SIGCONT)
