"""What the host's processes are doing while a benchmark runs: a thread samples every process's
state from /proc, counting those running (R) and those in uninterruptible sleep (D: waiting in the
kernel, e.g. on a driver lock or the disk), and where in the kernel the waiting ones were (wchan).

A load average far above the busy CPUs means processes wait in D; the wchan names say on what.
"""

from __future__ import annotations

import os
import statistics
import threading
from collections import Counter
from typing import Any


def _read(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


class ProcessStates:
    def __init__(self, interval_s: float = 0.1) -> None:
        self.interval_s = interval_s
        self.running: list[int] = []
        self.blocked: list[int] = []
        self.wchan: Counter[str] = Counter()
        self.blocked_names: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="process-states", daemon=True)

    def __enter__(self) -> ProcessStates:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _sample(self) -> None:
        own = str(os.getpid())
        while not self._stop.wait(self.interval_s):
            running = blocked = 0
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit() or entry.name == own:
                    continue
                stat = _read(f"/proc/{entry.name}/stat")
                end = stat.rfind(")")
                if end < 0:
                    continue
                state = stat[end + 2 : end + 3]
                if state == "R":
                    running += 1
                elif state == "D":
                    blocked += 1
                    self.wchan[_read(f"/proc/{entry.name}/wchan") or "?"] += 1
                    self.blocked_names[stat[stat.find("(") + 1 : end]] += 1
            self.running.append(running)
            self.blocked.append(blocked)

    def summary(self) -> dict[str, Any]:
        if not self.running:
            return {"samples": 0}
        return {
            "samples": len(self.running),
            "interval_s": self.interval_s,
            "running_mean": round(statistics.mean(self.running), 2),
            "blocked_mean": round(statistics.mean(self.blocked), 2),
            "blocked_max": max(self.blocked),
            "blocked_wchan": dict(self.wchan.most_common(8)),
            "blocked_commands": dict(self.blocked_names.most_common(8)),
        }
