"""Shared by the integration examples: a Referee server (REFEREE_URL, or an embedded one started
here) and a made-up model completion for examples/relu."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

RELU = ROOT / "examples" / "relu"
REFERENCE = (RELU / "reference.py").read_text()
CANDIDATE = (RELU / "candidate.py").read_text()
COMPLETION = (
    "<think>ReLU is elementwise; one program per 1024 elements.</think>\n"
    f"Here is my Triton implementation:\n\n```python\n{CANDIDATE}```\n\nIt masks the tail block."
)
WRONG_COMPLETION = COMPLETION.replace("tl.where(x > 0, x, 0.0)", "tl.where(x > 0, x, 1.0)")
# Quick settings for the CPU interpreter; drop them on a GPU server.
os.environ.setdefault("REFEREE_OPTIONS", '{"trials": 2, "timing_sets": 1, "max_timing_seconds": 0.1}')


@contextmanager
def referee_server() -> Iterator[str]:
    """REFEREE_URL when set; otherwise an embedded server for the length of the block."""
    if os.environ.get("REFEREE_URL"):
        yield os.environ["REFEREE_URL"]
        return
    from triton_referee.service.server import background_server
    from triton_referee.service.settings import Settings

    with background_server(Settings(redis_url=None, auth="off", embedded_workers=2)) as url:
        os.environ["REFEREE_URL"] = url
        try:
            yield url
        finally:
            del os.environ["REFEREE_URL"]
