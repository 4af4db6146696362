"""Entry point: `python -m harness --role reference|candidate --read-fd R --write-fd W --key-fd K`.

Serves commands from the parent over the authenticated channel until told to exit or the channel
closes. Replies are {"ok": true, ...} or {"ok": false, "error": {"kind": ..., ...}}."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .limits import apply_limits
from .server import serve


def main() -> int:
    parser = argparse.ArgumentParser(prog="harness")
    parser.add_argument("--role", choices=("reference", "candidate"), required=True)
    parser.add_argument("--read-fd", type=int, required=True)
    parser.add_argument("--write-fd", type=int, required=True)
    parser.add_argument("--key-fd", type=int, required=True)
    parser.add_argument("--data-fd", type=int, default=None)
    parser.add_argument("--limits", type=json.loads, default={})
    parser.add_argument("--evidence-fd", type=int, default=None, help="the judge's pipe for the native recorder's records")
    parser.add_argument("--native-cache", default=None, help="where the engine built the recorder")
    parser.add_argument(
        "--lockdown",
        type=json.loads,
        default=None,
        help='{"landlock_abi": N, "seccomp": bool}: confine this process first (lockdown.py)',
    )
    args = parser.parse_args()
    if args.lockdown is not None:  # before the key is read and any submitted code is loaded
        from . import lockdown

        support = lockdown.Support(int(args.lockdown.get("landlock_abi") or 0), bool(args.lockdown.get("seccomp")))
        cuda = os.environ.get("TRITON_INTERPRET") != "1"  # the worker sets it for CPU jobs
        if cuda:
            find_libcuda_before_lockdown()
        try:
            # The recorder the engine built is loaded after the lockdown (CUPTI starts threads, and
            # landlock binds only the thread that applies it): its folder must stay readable.
            extra = [args.native_cache] if args.native_cache else None
            lockdown.apply(lockdown.default_policy(os.getcwd(), extra, cuda=cuda), support)
        except OSError as exc:
            print(f"harness: cannot confine this process: {exc}", file=sys.stderr, flush=True)
            return 74
    apply_limits(args.limits)
    if args.evidence_fd is not None:  # before serve: before any submitted code is imported
        from . import native

        native.record_to(args.evidence_fd, Path(args.native_cache) if args.native_cache else None)
    return serve(args.role, args.read_fd, args.write_fd, args.key_fd, args.data_fd)


def find_libcuda_before_lockdown() -> None:
    """Triton finds libcuda by running `/sbin/ldconfig -p`, which the lockdown refuses (on Debian-family
    hosts it is a shell script: /bin/sh is not among what a locked-down process may execute). Asked
    once here (Triton caches the answer per process), as the warm pool's zygote does before forking;
    a fresh CLI process on an H200 failed every check without it."""
    try:
        from triton.backends.nvidia import driver

        driver.libcuda_dirs()
    except Exception as exc:  # no nvidia backend, or no libcuda: CUDA's own error comes later, clearer
        print(f"harness: libcuda not found before the lockdown: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.stdout.flush()
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
