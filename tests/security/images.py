"""The docker image the security tests run candidates in, built offline from this machine's runtime.

No registry is reachable in CI, so the image is `docker import`ed from a tarball of exactly what the
harness needs here: the shared libraries the harness python maps once torch, triton and numpy are
loaded, the dynamic loader and its cache, the Python prefix (without its own site-packages) and the
venv's site-packages, all at the same paths as on the host. The tag carries a hash of that file
list, so it is built once per machine and runtime.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import time

_LAYOUT = 2  # bump when the image's layout changes, so a stale cached image is not reused

# Loaded by the probe: everything else the harness imports lives under the prefixes.
_PROBE = """
import json, os, sys, site
import numpy, torch, triton, triton.language
libs = set()
with open("/proc/self/maps") as maps:
    for line in maps:
        parts = line.split()
        if len(parts) >= 6 and parts[5].startswith("/") and ".so" in parts[5]:
            libs.add(parts[5])
print(json.dumps({"libs": sorted(libs), "prefix": sys.prefix, "base_prefix": sys.base_prefix,
                  "site": site.getsitepackages(), "executable": sys.executable}))
"""


def _probe(python: str) -> dict:
    out = subprocess.run([python, "-I", "-c", _PROBE], capture_output=True, text=True, check=True, timeout=300).stdout
    return json.loads(out.strip().splitlines()[-1])


def _members(info: dict) -> list[str]:
    """Top-level paths to put in the image (files or whole trees)."""
    prefixes = {info["prefix"], info["base_prefix"]}
    libs = {lib for lib in info["libs"] if not any(lib.startswith(p + "/") for p in prefixes)}
    libs |= {p for p in ("/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1") if os.path.exists(p)}
    paths = {"/etc/ld.so.cache"}
    for lib in libs:
        real = os.path.realpath(lib)
        folder = os.path.dirname(real)
        paths.add(real)
        paths.add(os.path.join(os.path.realpath(os.path.dirname(lib)), os.path.basename(lib)))  # e.g. the loader's link
        # The loader looks libraries up by soname: keep the links that name them.
        for entry in os.scandir(folder):
            if entry.is_symlink() and os.path.realpath(entry.path) == real:
                paths.add(entry.path)
    return sorted(paths)


def image_tag(python: str = sys.executable) -> tuple[str, dict]:
    info = _probe(python)
    digest = hashlib.sha256(json.dumps([_LAYOUT, _members(info), info]).encode()).hexdigest()[:12]
    return f"referee-sandbox-test:{digest}", info


def _add_dir_chain(tar: tarfile.TarFile, path: str, seen: set[str]) -> None:
    """Parent directories as 0755 (the host's /root is 0700; the container user is nobody)."""
    parts = path.strip("/").split("/")[:-1]
    for i in range(1, len(parts) + 1):
        name = "/".join(parts[:i])
        if name not in seen:
            seen.add(name)
            entry = tarfile.TarInfo(name)
            entry.type, entry.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(entry)


def build_image(python: str = sys.executable) -> tuple[str, float]:
    """Build (once) and return (tag, seconds spent building: 0 when it existed)."""
    tag, info = image_tag(python)
    if subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0:
        return tag, 0.0
    started = time.monotonic()
    importer = subprocess.Popen(["docker", "import", "-", tag], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert importer.stdin is not None
    seen: set[str] = set()
    base_site = os.path.join(info["base_prefix"], "lib")

    def skip_base_site(entry: tarfile.TarInfo) -> tarfile.TarInfo | None:
        # The base interpreter's own site-packages are not what the venv runs with.
        name = "/" + entry.name
        if name.startswith(base_site) and "/site-packages/" in name + "/" and info["prefix"] != info["base_prefix"]:
            return None
        return entry

    with tarfile.open(fileobj=importer.stdin, mode="w|") as tar:
        # The merged-/usr links first, so nothing below creates /lib or /bin as a directory.
        for link in ("/bin", "/lib", "/lib64", "/sbin"):
            if os.path.islink(link):
                seen.add(link.lstrip("/"))
                entry = tarfile.TarInfo(link.lstrip("/"))
                entry.type, entry.linkname = tarfile.SYMTYPE, os.readlink(link)
                tar.addfile(entry)
        for name in ("control", "opt/referee/lib/harness", "proc", "dev", "sys", "etc"):
            _add_dir_chain(tar, "/" + name + "/x", seen)
        tmp = tarfile.TarInfo("tmp")
        tmp.type, tmp.mode = tarfile.DIRTYPE, 0o1777  # docker's tmpfs over it keeps the image's mode
        tar.addfile(tmp)
        seen.add("tmp")
        for path in _members(info):
            _add_dir_chain(tar, path, seen)
            tar.add(path, arcname=path.lstrip("/"), recursive=False)
        for prefix in sorted({info["base_prefix"], info["prefix"]}):
            _add_dir_chain(tar, prefix, seen)
            tar.add(prefix, arcname=prefix.lstrip("/"), filter=skip_base_site)
    importer.stdin.close()
    if importer.wait() != 0:
        raise RuntimeError(f"docker import of {tag} failed")
    return tag, time.monotonic() - started
