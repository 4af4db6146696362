"""`triton.testing.do_bench` (median, ms) of each problem's candidate and reference, in one plain
process with no harness and no hooks: the yardstick for Referee's own kernel times.

    python3 -m bench.dobench_problems PROBLEMS.json OUT.json    # PROBLEMS: [{"name", "reference", "candidate"}]
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch
import triton.testing

from bench.lib import write_result
from triton_referee.sandbox.harness.runtime import load_module


def measure(name: str, reference_source: str, candidate_source: str, workdir: Path) -> dict[str, float]:
    (workdir / f"ref_{name}.py").write_text(reference_source)
    (workdir / f"cand_{name}.py").write_text(candidate_source)
    reference = load_module(str(workdir / f"ref_{name}.py"), f"ref_{name}")
    candidate = load_module(str(workdir / f"cand_{name}.py"), f"cand_{name}")
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = reference.Model(*reference.get_init_inputs())
        model_new = candidate.ModelNew(*reference.get_init_inputs())
        inputs = reference.get_inputs()
    with torch.no_grad():
        return {
            "candidate_ms": triton.testing.do_bench(lambda: model_new(*inputs), return_mode="median"),
            "reference_ms": triton.testing.do_bench(lambda: model(*inputs), return_mode="median"),
        }


def main() -> None:
    problems = json.loads(Path(sys.argv[1]).read_text())
    rows = {}
    with tempfile.TemporaryDirectory() as workdir:
        for problem in problems:
            rows[problem["name"]] = measure(problem["name"], problem["reference"], problem["candidate"], Path(workdir))
            print("do_bench", problem["name"], rows[problem["name"]], flush=True)
            torch.cuda.empty_cache()
    write_result(Path(sys.argv[2]), {"card": torch.cuda.get_device_name(), "rows": rows})


if __name__ == "__main__":
    main()
