"""Reference numbers for Referee's timing: `triton.testing.do_bench` (median) on every honest
example, candidate and reference, in one plain process (no harness, no hooks).

    python3 bench/dobench_examples.py --out DIR     # on a GPU host
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import triton.testing

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "sandbox"))

from harness.runtime import load_module  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rows = {}
    for problem_dir in sorted(p for p in (ROOT / "examples").iterdir() if (p / "candidate.py").is_file()):
        reference = load_module(problem_dir / "reference.py", f"ref_{problem_dir.name}")
        candidate = load_module(problem_dir / "candidate.py", f"cand_{problem_dir.name}")
        torch.manual_seed(0)
        with torch.device("cuda"):
            model = reference.Model(*reference.get_init_inputs())
            model_new = candidate.ModelNew(*reference.get_init_inputs())
            inputs = reference.get_inputs()
        with torch.no_grad():
            rows[problem_dir.name] = {
                "candidate_ms": triton.testing.do_bench(lambda m=model_new, x=inputs: m(*x), return_mode="median"),
                "reference_ms": triton.testing.do_bench(lambda m=model, x=inputs: m(*x), return_mode="median"),
            }
        print(problem_dir.name, rows[problem_dir.name], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "dobench-examples.json").write_text(json.dumps({"card": torch.cuda.get_device_name(), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
