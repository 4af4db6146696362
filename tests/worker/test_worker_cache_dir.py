"""A worker whose reference-cache directory cannot be written (a root-owned volume under the non-root
worker of docker/compose.yaml) starts with a warning and a private cache instead of exiting, which
under `restart: unless-stopped` was a restart loop (issue 19, item 4). As root, permissions do not
stop writes, so the unwritable directory here is one under a regular file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBE = (
    "from triton_referee.worker import context; from triton_referee.worker.settings import JudgeSettings; "
    "print(context.start(JudgeSettings(isolation='process', warm_pool=False), data_in_files=False).reference_cache.directory)"
)


def _cache_directory(wanted: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "REFEREE_REFERENCE_CACHE_DIR": str(wanted)},
    )


def test_a_writable_cache_directory_is_used(tmp_path: Path) -> None:
    completed = _cache_directory(tmp_path / "cache")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == str(tmp_path / "cache") and "warning" not in completed.stderr


def test_an_unwritable_cache_directory_is_replaced_with_a_warning(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    completed = _cache_directory(blocker / "cache")
    assert completed.returncode == 0, completed.stderr
    used = Path(completed.stdout.strip())
    assert used.name.startswith("referee-reference-cache-") and used.is_dir()
    assert f"the reference cache {blocker / 'cache'} is not writable" in completed.stderr
    assert f"caches in {used} instead" in completed.stderr
    used.rmdir()
