"""Isolation backends: how a harness process is confined.

A backend turns the harness command line into one that runs confined (namespaces, a container).
`process` confines nothing beyond what `HarnessProcess` always does (clean environment, own session,
private working directory, audit hook); it is for development only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class Isolation(Protocol):
    name: str

    def command(self, argv: list[str], workdir: Path, device: str) -> list[str]:
        """The command line that runs `argv` confined, with `workdir` as its only writable place."""
        ...


@dataclass(frozen=True)
class ProcessIsolation:
    name: str = "process"

    def command(self, argv: list[str], workdir: Path, device: str) -> list[str]:
        return argv
