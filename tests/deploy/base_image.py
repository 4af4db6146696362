"""A local base image for building docker/Dockerfile.* without a registry (test only).

The Dockerfiles' default bases (python:3.12-slim-bookworm) cannot be pulled here, so this image is
`docker import`ed from this machine's own files, the way tests/security/images.py builds the sandbox
image: this Python (its prefix and the venv with torch, triton and every dependency, at the same
paths), the shared libraries they map, and the few tools the Dockerfiles' RUN steps and the compose
file call (sh, coreutils, useradd, redis-server for the Redis service), each with the libraries
`ldd` names. The Dockerfiles then build on it with PIP_OPTIONS="--no-index --no-build-isolation"
(the venv has setuptools) and TORCH_SPEC="" / APT_PACKAGES="" (torch is already here; the CPU
interpreter needs no compiler). The tag carries a hash of the file list: built once per runtime.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time

from tests.security.images import _add_dir_chain, _members, _probe

_LAYOUT = 1  # bump when the image's layout changes
TOOLS = (
    "sh",
    "bash",
    "env",
    "id",
    "cat",
    "ls",
    "mkdir",
    "chown",
    "chmod",
    "rm",
    "cp",
    "mv",
    "ln",
    "install",
    "sleep",
    "touch",
    "grep",
    "useradd",
    "groupadd",
    "redis-server",
)
ETC = (
    "/etc/passwd",
    "/etc/group",
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/login.defs",
    "/etc/nsswitch.conf",
    "/etc/default/useradd",
    "/etc/ld.so.cache",
    "/etc/skel",
)


def _with_libraries(path: str) -> set[str]:
    """The file, its symlink chain, and the shared libraries ldd resolves for it."""
    listing = subprocess.run(["ldd", path], capture_output=True, text=True).stdout
    found = set()
    for name in [path, *re.findall(r"(/\S+) \(0x", listing)]:
        # The name through its real folder (/lib is a link to usr/lib), and what it links to.
        found |= {os.path.join(os.path.realpath(os.path.dirname(name)), os.path.basename(name)), os.path.realpath(name)}
    return found


def _tool_paths() -> set[str]:
    paths: set[str] = set()
    for tool in TOOLS:
        where = shutil.which(tool, path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        if where is None:
            raise RuntimeError(f"{tool} is missing on this machine (the test base image needs it)")
        paths |= _with_libraries(where)
    return paths


def base_image_tag(python: str = sys.executable) -> tuple[str, dict, list[str]]:
    info = _probe(python)
    files = sorted(set(_members(info)) | _tool_paths() | {p for p in ETC if os.path.exists(p)})
    digest = hashlib.sha256(json.dumps([_LAYOUT, files, info]).encode()).hexdigest()[:12]
    return f"referee-compose-base:{digest}", info, files


def build_base_image(python: str = sys.executable) -> tuple[str, dict, float]:
    """Build (once) and return (tag, the probe's info: where python and the venv are, seconds spent)."""
    tag, info, files = base_image_tag(python)
    if subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0:
        return tag, info, 0.0
    started = time.monotonic()
    path = f"{info['prefix']}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    importer = subprocess.Popen(
        ["docker", "import", "--change", f"ENV PATH={path}", "-", tag], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL
    )
    assert importer.stdin is not None
    seen: set[str] = set()
    base_site = os.path.join(info["base_prefix"], "lib")

    def skip(entry: tarfile.TarInfo) -> tarfile.TarInfo | None:
        name = "/" + entry.name
        if "/__pycache__" in name:
            return None
        # The base interpreter's own site-packages are not what the venv runs with.
        if name.startswith(base_site) and "/site-packages/" in name + "/" and info["prefix"] != info["base_prefix"]:
            return None
        return entry

    with tarfile.open(fileobj=importer.stdin, mode="w|") as tar:
        for link in ("/bin", "/lib", "/lib64", "/sbin"):  # merged /usr first
            if os.path.islink(link):
                seen.add(link.lstrip("/"))
                entry = tarfile.TarInfo(link.lstrip("/"))
                entry.type, entry.linkname = tarfile.SYMTYPE, os.readlink(link)
                tar.addfile(entry)
        for name in ("proc", "dev", "sys", "home", "data", "var/lib", "run", "usr/local/bin", "etc"):
            _add_dir_chain(tar, "/" + name + "/x", seen)
        tmp = tarfile.TarInfo("tmp")
        tmp.type, tmp.mode = tarfile.DIRTYPE, 0o1777
        tar.addfile(tmp)
        seen.add("tmp")
        for member in files:
            _add_dir_chain(tar, member, seen)
            tar.add(member, arcname=member.lstrip("/"), recursive=os.path.isdir(member) and not os.path.islink(member))
        for prefix in sorted({info["base_prefix"], info["prefix"]}):
            _add_dir_chain(tar, prefix, seen)
            tar.add(prefix, arcname=prefix.lstrip("/"), filter=skip)
    importer.stdin.close()
    if importer.wait() != 0:
        raise RuntimeError(f"docker import of {tag} failed")
    return tag, info, time.monotonic() - started
