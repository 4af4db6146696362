"""The `referee` console script: the CLI needs the `[server]` extra; a client-only install (what a
trainer machine has) gets one line saying so instead of a traceback."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from triton_referee.service.cli import main as cli_main
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == "triton_referee":  # a module of ours is missing: a broken install
            raise
        print(
            f"referee: the command line needs the server extra (missing {exc.name}): pip install 'triton-referee[server]'",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    cli_main()
