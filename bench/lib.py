"""What the benchmark scripts share: percentiles computed one way, the name and description of the
machine a result was measured on, and writing a result file. Scripts run as modules from the
repository root (`python -m bench.corpus ...`), so they import this, the product and each other
without touching sys.path. The service's processes (redis-server, API, workers) are started through
service/stack.py, which the tests use too."""

from __future__ import annotations

import json
import math
import os
import platform
import re
import statistics
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def percentile(values: list[float], q: int) -> float:
    """The q-th percentile (q a whole number from 1 to 99) of `values`: linear interpolation between
    the two nearest ranks (`statistics.quantiles(..., method="inclusive")`, numpy's default), so the
    50th is the median, and the smallest and largest values bound every percentile. One value is its
    own percentile; no values give nan."""
    if not 1 <= q <= 99:
        raise ValueError(f"percentile {q} is not a whole number from 1 to 99")
    if len(values) < 2:
        return float(values[0]) if values else math.nan
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def spread(values: list[float], digits: int = 3) -> dict[str, float] | None:
    """p50 and p95 of `values`, rounded (None when there are none)."""
    return {"p50": round(percentile(values, 50), digits), "p95": round(percentile(values, 95), digits)} if values else None


def cpu_name() -> str:
    return f"cpu-{os.cpu_count()}core-{platform.machine()}"


def card_name() -> str:
    """The first GPU's name as nvidia-smi gives it (without importing torch), else this CPU's (`cpu-...`)."""
    try:
        names = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=30, check=True
        ).stdout.splitlines()
        return names[0].strip() or cpu_name()
    except (OSError, subprocess.SubprocessError, IndexError):
        return cpu_name()


def is_cpu(card: str) -> bool:
    """Whether `card` (from card_name) names a CPU: no GPU was found."""
    return card.startswith("cpu-")


def describe_machine() -> dict[str, Any]:
    """What a result file says about where it was measured."""
    return {
        "card": card_name(),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "arch": platform.machine(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def slug(text: str) -> str:
    """`text` as a piece of a file name: lower case, runs of anything else than letters and digits as `-`."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def write_result(path: Path, document: Any, indent: int = 1) -> Path:
    """Write `document` as JSON (values JSON lacks as strings) to `path`, making its folder; return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=indent, default=str) + "\n")
    return path
