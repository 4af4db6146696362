"""Resource limits a harness process sets on itself before it reads its key (so before any
submitted code runs). No RLIMIT_AS: CUDA reserves far more address space than it uses."""

from __future__ import annotations

import resource

RLIMITS = {
    "cpu_s": resource.RLIMIT_CPU,
    "file_bytes": resource.RLIMIT_FSIZE,
    "open_files": resource.RLIMIT_NOFILE,
    "core_bytes": resource.RLIMIT_CORE,
}


def apply_limits(limits: dict[str, int] | None) -> None:
    for name, value in (limits or {}).items():
        if name not in RLIMITS:
            raise ValueError(f"unknown limit {name!r}")
        resource.setrlimit(RLIMITS[name], (int(value), int(value)))
