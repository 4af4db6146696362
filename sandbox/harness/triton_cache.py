"""What the warm pool puts into each harness process's own Triton cache, verified by sha256.

Two kinds of compiled C modules, both built by trusted code and never by a candidate:

- Triton's CUDA driver utilities, built once when the zygote starts (see zygote.py).
- Kernel launchers. Triton 3.6 compiles one small C module per kernel argument-type pattern with
  `gcc -O3` (~0.4 s, on the critical path of every first launch). The launcher's source depends
  only on that pattern: every pointer type becomes `CUdeviceptr` and constants are not used. A
  candidate process reports the patterns it had to compile; the zygote builds each in a throwaway
  child from the pattern alone (a list of known type names, never anything the candidate wrote),
  keeps the sha256 of the bytes, and gives later children the map. A child copies a launcher into
  its own cache, verified, at the moment Triton asks for it.

Triton versions whose driver has no per-pattern launcher (a generic one) need none of this; then
`launchers_supported()` is False and nothing is patched.
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
from typing import Any

LAUNCHER = "__triton_launcher"
MAX_PATTERN = 64  # arguments
# The type names Triton's launcher generator accepts for a scalar, plus "*" for any pointer.
TOKENS = frozenset(
    {"*", "constexpr", "i1", "i8", "i16", "i32", "i64", "u1", "u8", "u16", "u32", "u64", "fp16", "bf16", "fp32", "f32", "fp64"}
)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def seed_files(cache_dir: str | None) -> dict[str, str]:
    """Relative path -> sha256 of what a Triton cache holds (trusted: built before any job)."""
    found: dict[str, str] = {}
    if cache_dir and os.path.isdir(cache_dir):
        for folder, _, names in os.walk(cache_dir):
            for name in names:
                path = os.path.join(folder, name)
                with open(path, "rb") as handle:
                    found[os.path.relpath(path, cache_dir)] = digest(handle.read())
    return found


def copy_seed(source: str, target: str, files: dict[str, str]) -> int:
    """Copy trusted files into a child's own Triton cache, skipping anything changed since it was
    digested (another job of this worker could have written there). Returns how many were copied."""
    copied = 0
    for relative, expected in files.items():
        try:
            with open(os.path.join(source, relative), "rb") as handle:
                data = handle.read()
        except OSError:
            continue
        if digest(data) != expected:
            continue
        destination = os.path.join(target, relative)
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        with open(destination, "wb") as handle:
            handle.write(data)
        copied += 1
    return copied


def _driver() -> Any:  # Triton's module or None (Triton ships no types)
    """Triton's CUDA driver module, when it builds a launcher per argument-type pattern."""
    try:
        from triton.backends.nvidia import driver
    except Exception:
        return None
    needed = ("make_launcher", "compile_module_from_src", "library_dirs", "include_dirs", "libraries")
    return driver if all(hasattr(driver, name) for name in needed) else None


def launchers_supported() -> bool:
    return _driver() is not None


def pattern_of(signature: dict[Any, Any], tensordesc_meta: Any) -> list[str] | None:
    """A kernel signature's argument-type pattern, or None for one this cache does not handle
    (tensor descriptors, tuples, unknown types)."""
    if tensordesc_meta:
        return None
    tokens = []
    for kind in signature.values():
        if not isinstance(kind, str):
            return None
        tokens.append("*" if kind.startswith("*") else kind)
    return tokens if valid_pattern(tokens) else None


def valid_pattern(tokens: Any) -> bool:
    return (
        isinstance(tokens, list)
        and len(tokens) <= MAX_PATTERN
        and all(isinstance(token, str) and token in TOKENS for token in tokens)
    )


def launcher_entry(source: str) -> str:
    """Where Triton's cache keeps the launcher compiled from `source`: Triton's key, a sha256 of the
    source and the platform, names the directory (base32-encoded where Triton does so)."""
    from triton.runtime import cache
    from triton.runtime.build import platform_key

    key = hashlib.sha256((source + platform_key()).encode("utf-8")).hexdigest()
    directory = cache._base32(key) if hasattr(cache, "_base32") else key
    return f"{directory}/{LAUNCHER}{sysconfig.get_config_var('EXT_SUFFIX')}"


def build_launcher(tokens: list[str], cache_dir: str) -> tuple[str, str] | None:
    """Compile the launcher for a pattern into `cache_dir` (run by a throwaway child of the
    zygote: loading the module is not for the zygote itself). Returns (entry, sha256)."""
    driver = _driver()
    if driver is None or not valid_pattern(tokens):
        return None
    os.environ["TRITON_CACHE_DIR"] = cache_dir
    source = driver.make_launcher({}, {i: ("*fp32" if t == "*" else t) for i, t in enumerate(tokens)}, None)
    driver.compile_module_from_src(
        src=source,
        name=LAUNCHER,
        library_dirs=driver.library_dirs(),
        include_dirs=driver.include_dirs,
        libraries=driver.libraries,
    )
    entry = launcher_entry(source)
    try:
        with open(os.path.join(cache_dir, entry), "rb") as handle:
            return entry, digest(handle.read())
    except OSError:  # Triton keyed it differently: nothing to share
        return None


class LauncherSeeds:
    """In a harness process: serves Triton's launcher lookups from the zygote's verified builds and
    remembers the patterns it had to compile itself."""

    def __init__(self, seeds: dict[str, str], seed_dir: str | None) -> None:
        self.seeds = seeds
        self.seed_dir = seed_dir
        self.seeded = 0
        self.built: list[list[str]] = []
        self._patterns: dict[str, list[str] | None] = {}

    def install(self) -> bool:
        driver = _driver()
        if driver is None:
            return False
        make_launcher, compile_module = driver.make_launcher, driver.compile_module_from_src

        def making(constants: Any, signature: Any, tensordesc_meta: Any) -> str:
            source = make_launcher(constants, signature, tensordesc_meta)
            self._patterns[source] = pattern_of(signature, tensordesc_meta)
            return source

        def compiling(src: str, name: str, *args: Any, **kwargs: Any) -> Any:
            if name == LAUNCHER and src in self._patterns:
                self._before_launcher(src)
            return compile_module(src, name, *args, **kwargs)

        driver.make_launcher, driver.compile_module_from_src = making, compiling
        return True

    def _before_launcher(self, source: str) -> None:
        cache_dir = os.environ.get("TRITON_CACHE_DIR")
        entry = launcher_entry(source)
        if cache_dir is None or os.path.exists(os.path.join(cache_dir, entry)):
            return
        if self.seed_dir and entry in self.seeds and copy_seed(self.seed_dir, cache_dir, {entry: self.seeds[entry]}):
            self.seeded += 1
            return
        pattern = self._patterns[source]
        if pattern is not None and pattern not in self.built and len(self.built) < 16:
            self.built.append(pattern)

    def report(self) -> dict[str, Any]:
        return {"seeded": self.seeded, "built": self.built}


seeds: LauncherSeeds | None = None  # set in a pooled child before any candidate code is loaded
