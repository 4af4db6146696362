"""Reference timings cached per problem, input plan, GPU model and versions.

An RL group sends many candidates for one problem; timing the reference is the longest part of the
reference run (up to `max_timing_seconds`), and its result depends only on the problem, the shapes
it is timed on, the card and the software. Only timings are kept here; inputs and expected outputs
are cached, under their own bounds, by `reference_data.py`.
Entries live in memory and, when a directory is given, as JSON files shared by worker processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any


class ReferenceCache:
    def __init__(self, directory: Path | str | None = None, max_entries: int = 4096) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.max_entries = max_entries
        self._memory: OrderedDict[str, dict[str, Any]] = OrderedDict()
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(problem_sha256: str, input_sets: list[dict[str, int]], environment: dict[str, Any], timing: dict[str, Any]) -> str:
        material = json.dumps(
            {"problem": problem_sha256, "input_sets": input_sets, "environment": environment, "timing": timing}, sort_keys=True
        )
        return hashlib.sha256(material.encode()).hexdigest()

    def get(self, key: str) -> dict[str, Any] | None:
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key]
        if self.directory is not None:
            try:
                stats = json.loads((self.directory / f"{key}.json").read_text())
            except (OSError, ValueError):
                return None
            if isinstance(stats, dict):
                self._remember(key, stats)
                return stats
        return None

    def put(self, key: str, stats: dict[str, Any]) -> None:
        self._remember(key, stats)
        if self.directory is not None:
            # Written to a temporary file and renamed, so a reader never sees half a document.
            fd, temporary = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
            with os.fdopen(fd, "w") as handle:
                json.dump(stats, handle)
            os.replace(temporary, self.directory / f"{key}.json")

    def _remember(self, key: str, stats: dict[str, Any]) -> None:
        self._memory[key] = stats
        self._memory.move_to_end(key)
        while len(self._memory) > self.max_entries:
            self._memory.popitem(last=False)
