"""Sharing Triton's per-pattern launchers between evaluations (sandbox/harness/triton_cache.py).

Building a real launcher needs Triton 3.6's CUDA driver (gcc against libcuda), so the build
itself runs in tests/gpu/test_gpu_engine.py; here the builder is replaced by one that writes a
file, and everything around it is real: the zygote's validation, its throwaway builder process
and pipe, and a child's verified copy."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from triton_referee.sandbox.harness import triton_cache, zygote
from triton_referee.sandbox.harness.triton_cache import LauncherSeeds, launcher_entry, pattern_of, valid_pattern


def test_a_pattern_keeps_argument_kinds_and_drops_pointer_types() -> None:
    assert pattern_of({0: "*fp32", 1: "*bf16", 2: "i32", 3: "constexpr"}, None) == ["*", "*", "i32", "constexpr"]
    assert pattern_of({0: "*fp32", 1: ("i32", "i32")}, None) is None  # tuples: not handled
    assert pattern_of({0: "tensordesc<fp32[64, 64]>"}, None) is None
    assert pattern_of({0: "*fp32"}, [{"block": 1}]) is None


@pytest.mark.parametrize(
    "pattern",
    [
        ['i32); system("id"); //'],
        ["*fp32"],
        "i32",
        [1],
        ["i32"] * 65,
        [["i32"]],
    ],
)
def test_only_short_lists_of_known_type_names_are_built(pattern: object) -> None:
    assert not valid_pattern(pattern)


def _zygote(seed_dir: Path) -> zygote.Zygote:
    z = zygote.Zygote.__new__(zygote.Zygote)
    z.seed_dir = str(seed_dir)
    z.launchers, z.patterns, z.builders, z.children = {}, set(), {}, set()
    z.exits, z.memory_limits, z.workdirs, z.spares = {}, {}, {}, []
    return z


def _fake_build(tokens: list[str], cache_dir: str) -> tuple[str, str]:
    """Stands in for gcc against libcuda (absent here): one file per pattern, as Triton lays it out."""
    entry = f"{'-'.join(t.replace('*', 'ptr') for t in tokens)}/__triton_launcher.so"
    data = ("launcher for " + ",".join(tokens)).encode()
    os.makedirs(os.path.join(cache_dir, os.path.dirname(entry)), exist_ok=True)
    Path(cache_dir, entry).write_bytes(data)
    return entry, triton_cache.digest(data)


def test_the_zygote_builds_each_valid_pattern_once_in_a_throwaway_child(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(triton_cache, "build_launcher", _fake_build)
    z = _zygote(tmp_path)
    z.learn(["*", "*", "i32"])
    z.learn(["*", "*", "i32"])  # asked again while building: once
    z.learn(["evil; rm -rf /"])
    assert len(z.builders) == 1
    deadline = time.monotonic() + 30
    while z.builders and time.monotonic() < deadline:
        z.reap()
        time.sleep(0.02)
    assert list(z.launchers) == ["ptr-ptr-i32/__triton_launcher.so"]
    assert z.launchers["ptr-ptr-i32/__triton_launcher.so"] == triton_cache.digest(b"launcher for *,*,i32")
    z.learn(["*", "*", "i32"])  # built already
    assert not z.builders


def test_a_child_takes_a_verified_launcher_and_reports_what_it_compiled(tmp_path: Path) -> None:
    seed_dir, cache_dir = tmp_path / "seed", tmp_path / "cache"
    good, tampered = "source of a launcher", "source of another launcher"
    seeds = {}
    for source in (good, tampered):
        entry = launcher_entry(source)
        (seed_dir / entry).parent.mkdir(parents=True)
        (seed_dir / entry).write_bytes(source.encode())
        seeds[entry] = triton_cache.digest(source.encode())
    (seed_dir / launcher_entry(tampered)).write_bytes(b"written by another job")
    child = LauncherSeeds(seeds, str(seed_dir))
    child._patterns = {good: ["*", "i32"], tampered: ["*", "i64"], "unseen": ["*", "fp32"]}
    os.environ["TRITON_CACHE_DIR"] = str(cache_dir)
    try:
        for source in (good, tampered, "unseen"):
            child._before_launcher(source)
    finally:
        del os.environ["TRITON_CACHE_DIR"]
    assert (cache_dir / launcher_entry(good)).read_bytes() == good.encode()
    assert not (cache_dir / launcher_entry(tampered)).exists()  # changed since digested: compiled instead
    assert child.report() == {"seeded": 1, "built": [["*", "i64"], ["*", "fp32"]]}
