"""KernelBench's own evaluator, imported by path from a checkout, for the comparisons in
bench/cli_vs_kernelbench.py and bench/kernelbench_sizes.py; and a runner that measures a command's
wall time and the peak resident memory of its whole process tree.

`python3 -m bench.kernelbench_eval --kernelbench PATH --reference REF.py --candidate CAND.py` runs
one `eval_kernel_against_ref` (KernelBench's src/ on sys.path; backend "triton") in this fresh
process and prints its result as one JSON line. KernelBench's package imports LLM clients
(openai, litellm, dotenv, ...) that its evaluator never calls; where one is not installed (a GPU host
without network) an empty stand-in module takes its place, and the JSON names every stand-in.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Imported by kernelbench/utils.py (and its imports) for LLM calls and progress bars only.
_LLM_ONLY = ("openai", "litellm", "dotenv", "tqdm", "requests", "together", "google", "anthropic", "modal")


def _stand_in(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__path__ = []  # a package, so `from name.sub import x` resolves to more stand-ins

    def __getattr__(attribute: str) -> Any:
        if attribute.startswith("__"):
            raise AttributeError(attribute)

        def unavailable(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError(f"{name}.{attribute} is a stand-in: {name} is not installed here")

        if attribute == "load_dotenv":
            return lambda *args, **kwargs: False
        if attribute == "tqdm":
            return lambda iterable=None, *args, **kwargs: iterable
        return unavailable

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    return module


class _StandInFinder:
    """Answers imports of the LLM-only packages (and their submodules) that are not installed."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        import importlib.machinery

        # Last on sys.meta_path: asked only when no real finder has the module.
        if fullname.split(".")[0] not in _LLM_ONLY:
            return None
        self.used.add(fullname)
        return importlib.machinery.ModuleSpec(fullname, self)  # type: ignore[arg-type]

    def create_module(self, spec: Any) -> types.ModuleType:
        return _stand_in(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def import_kernelbench(checkout: Path) -> tuple[Any, list[str]]:
    """kernelbench.eval from CHECKOUT/src, and the modules stood in for."""
    source = checkout / "src"
    if not (source / "kernelbench" / "eval.py").is_file():
        raise SystemExit(f"{checkout} is not a KernelBench checkout (no src/kernelbench/eval.py)")
    sys.path.insert(0, str(source))
    finder = _StandInFinder()
    sys.meta_path.append(finder)
    import kernelbench.eval as kernelbench_eval

    return kernelbench_eval, sorted(finder.used)


def _evaluate_here(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    kernelbench_eval, stand_ins = import_kernelbench(Path(args.kernelbench))
    import torch

    imported = time.monotonic()
    precision = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.precision]
    result = kernelbench_eval.eval_kernel_against_ref(
        Path(args.reference).read_text(),
        Path(args.candidate).read_text(),
        seed_num=args.seed,
        num_correct_trials=args.trials,
        num_perf_trials=args.perf_trials,
        measure_performance=True,
        backend="triton",
        precision=precision,
        device=torch.device("cuda", 0),
    )
    finished = time.monotonic()
    document: dict[str, Any] = {"stand_ins": stand_ins, "import_s": imported - started, "evaluate_s": finished - imported}
    if result is None:  # KernelBench's "lock file error, please retry"
        document.update(compiled=None, correctness=None, error="eval_kernel_against_ref returned None (retry)")
        return document
    # KernelBench's own fields and units (-1 when not measured).
    ref_runtime = getattr(result, "ref_runtime", -1.0)
    document.update(
        compiled=result.compiled,
        correctness=result.correctness,
        runtime=result.runtime,
        ref_runtime=ref_runtime,
        metadata={key: str(value)[:500] for key, value in (result.metadata or {}).items()},
    )
    if result.runtime > 0 and ref_runtime > 0:
        document["speedup"] = ref_runtime / result.runtime
    return document


# --- measuring a command -------------------------------------------------------------------------


def _tree_rss_bytes(root: int) -> int:
    """Resident memory of ROOT and all its descendants now (from /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, parent = int(entry), int(fields[1])
        children.setdefault(parent, []).append(pid)
        rss[pid] = int(fields[21]) * page
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


@dataclass
class Measured:
    returncode: int
    stdout: str
    stderr: str
    wall_s: float
    peak_rss_bytes: int


def run_measured(
    command: list[str], timeout: float, env: dict[str, str] | None = None, cwd: Path | None = None, interval: float = 0.05
) -> Measured:
    """Run COMMAND; its wall time and the peak of its process tree's summed RSS, sampled every INTERVAL s."""
    started = time.monotonic()
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd, start_new_session=True
    )
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss_bytes(process.pid))
            done.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        stdout, stderr = process.communicate()
        stderr += f"\n[killed after {timeout:g} s]"
    wall = time.monotonic() - started
    done.set()
    sampler.join()
    return Measured(process.returncode, stdout, stderr, wall, peak)


def kernelbench_command(
    checkout: Path, reference: Path, candidate: Path, trials: int = 5, perf_trials: int = 100, precision: str = "fp32"
) -> list[str]:
    """This module's command line for one evaluation; run it from the repository root."""
    return [
        sys.executable,
        "-m",
        "bench.kernelbench_eval",
        "--kernelbench",
        str(checkout),
        "--reference",
        str(reference),
        "--candidate",
        str(candidate),
        "--trials",
        str(trials),
        "--perf-trials",
        str(perf_trials),
        "--precision",
        precision,
    ]


def last_json_line(text: str) -> dict[str, Any] | None:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kernelbench", required=True, help="a KernelBench checkout (with src/kernelbench/eval.py)")
    parser.add_argument("--reference", required=True)
    parser.add_argument("--candidate", required=True)
    parser.add_argument("--trials", type=int, default=5, help="correctness trials (num_correct_trials)")
    parser.add_argument("--perf-trials", type=int, default=100, help="timed runs (num_perf_trials)")
    parser.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    print(json.dumps(_evaluate_here(args), default=str), flush=True)


if __name__ == "__main__":
    main()
