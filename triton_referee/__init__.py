"""Triton Referee. Installed, `service`, `worker` and `sandbox` are subpackages of this package
(pyproject.toml maps the repository's top-level folders here), so a user's own `service/` cannot
hide them. In a source checkout run without installing (`PYTHONPATH=checkout python3 -m ...`, as
bench/gpu_session.sh does on the GPU host), this folder holds only this file: the three packages are
then found in the checkout's root."""

from pathlib import Path

_here = Path(__file__).resolve().parent
_checkout = _here.parent
if (
    not (_here / "worker").is_dir()
    and (_checkout / "worker" / "__init__.py").is_file()
    and (_checkout / "pyproject.toml").is_file()
):
    __path__.append(str(_checkout))  # a package's __path__ is set by the import system
