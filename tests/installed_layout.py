"""Static checks on the package as installed. Installed, the three packages are
triton_referee.{service,worker,sandbox}; in the checkout they are top-level folders that
pyproject.toml maps there, a mapping that import-linter (it reads packages from the file system)
and mypy (it does not follow setuptools' editable-install finder) cannot see. So both run on a copy
laid out as installed, and mypy's paths are given back as the checkout's.

    python -m tests.installed_layout lint-imports [CHECKOUT]
    python -m tests.installed_layout mypy [MYPY ARGS...]
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("service", "worker", "sandbox")
TOOLS = Path(sys.executable).parent
COPIED_NOT = shutil.ignore_patterns("__pycache__", "*.so", "*.o")


@contextmanager
def installed_copy(checkout: Path = ROOT) -> Iterator[Path]:
    """A temporary folder holding triton_referee/{service,worker,sandbox} copied from `checkout`,
    and the checkout's bench/ beside it (the bench library imports the product)."""
    with tempfile.TemporaryDirectory(prefix="referee-installed-") as folder:
        view = Path(folder)
        package = view / "triton_referee"
        package.mkdir()
        shutil.copy2(checkout / "triton_referee" / "__init__.py", package / "__init__.py")
        for name in PACKAGES:
            if (checkout / name).is_dir():
                shutil.copytree(checkout / name, package / name, ignore=COPIED_NOT)
        if (checkout / "bench").is_dir():
            shutil.copytree(checkout / "bench", view / "bench", ignore=shutil.ignore_patterns("__pycache__", "results"))
        yield view


def lint_imports(checkout: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """import-linter with the contracts of `checkout`'s pyproject.toml."""
    with installed_copy(checkout) as view:
        # the copy first (import-linter also puts its working directory first); this checkout for the
        # custom contract type (tests.import_contracts)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(view), str(ROOT)])}
        command = [str(TOOLS / "lint-imports"), "--no-cache", str(checkout / "pyproject.toml")]
        return subprocess.run(command, cwd=view, env=env, capture_output=True, text=True, timeout=300)


def mypy(arguments: list[str], checkout: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """mypy with `checkout`'s configuration on the copy (the configured `files`, as installed),
    its cache in the checkout; the paths it reports are the checkout's."""
    with installed_copy(checkout) as view:
        files = ["triton_referee/__init__.py"]
        files += [f"triton_referee/{name}" if name in PACKAGES else name for name in _configured_files(checkout)]
        command = [
            str(TOOLS / "mypy"),
            "--config-file",
            str(checkout / "pyproject.toml"),
            "--cache-dir",
            str(checkout / ".mypy_cache" / "installed-layout"),
        ]
        completed = subprocess.run(
            [*command, *arguments, *files],
            cwd=view,
            env={**os.environ, "MYPYPATH": ""},
            capture_output=True,
            text=True,
            timeout=600,
        )
    back = re.compile(rf"^triton_referee/({'|'.join(PACKAGES)})/", re.M)
    completed.stdout = back.sub(r"\1/", completed.stdout)
    return completed


def _configured_files(checkout: Path) -> list[str]:
    """[tool.mypy] files of `checkout`'s pyproject.toml."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: mypy depends on tomli there
        import tomli as tomllib
    with (checkout / "pyproject.toml").open("rb") as config:
        return list(tomllib.load(config)["tool"]["mypy"]["files"])


def main(arguments: list[str]) -> int:
    if arguments[:1] == ["lint-imports"]:
        completed = lint_imports(Path(arguments[1]).resolve() if len(arguments) > 1 else ROOT)
    elif arguments[:1] == ["mypy"]:
        completed = mypy(arguments[1:])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    sys.stdout.write(completed.stdout)
    sys.stderr.write(completed.stderr)
    return completed.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
