"""Reference numbers for Referee's timing: `triton.testing.do_bench` (median) on every honest
example, candidate and reference, in one plain process (no harness, no hooks).

    python3 -m bench.dobench_examples --out DIR     # on a GPU host
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from bench.dobench_problems import measure
from bench.lib import ROOT, write_result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as workdir:
        for problem_dir in sorted(p for p in (ROOT / "examples").iterdir() if (p / "candidate.py").is_file()):
            rows[problem_dir.name] = measure(
                problem_dir.name,
                (problem_dir / "reference.py").read_text(),
                (problem_dir / "candidate.py").read_text(),
                Path(workdir),
            )
            print(problem_dir.name, rows[problem_dir.name], flush=True)
    write_result(args.out / "dobench-examples.json", {"card": torch.cuda.get_device_name(), "rows": rows})


if __name__ == "__main__":
    main()
