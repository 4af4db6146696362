"""The `referee` command line.

Exit codes of `referee check`: 0 correct; 1 the candidate failed a check; 2 usage error or an
unreadable, oversized or unusable input file; 3 Referee itself failed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from sandbox.evaluate import evaluate
from sandbox.models import (
    MAX_SOURCE_BYTES,
    EvalConfig,
    EvaluationResult,
    Problem,
    RewardConfig,
    RewardPreset,
    Submission,
    Verdict,
)
from sandbox.static_checks import ProblemSourceError

EXIT_CORRECT, EXIT_FAILED, EXIT_USAGE, EXIT_INFRA = 0, 1, 2, 3

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Triton Referee: verify Triton kernels against PyTorch references.")
err = Console(stderr=True)


class InputFileError(Exception):
    pass


def read_source(path: Path, what: str) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_SOURCE_BYTES:
            raise InputFileError(f"{what} {path} is {size} bytes; the limit is {MAX_SOURCE_BYTES}")
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputFileError(f"{what} {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise InputFileError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc


def exit_code(result: EvaluationResult) -> int:
    if result.verdict == Verdict.correct:
        return EXIT_CORRECT
    return EXIT_INFRA if result.verdict == Verdict.infrastructure_error else EXIT_FAILED


def print_summary(console: Console, result: EvaluationResult) -> None:
    colour = {"correct": "green", "incorrect": "red", "cheating": "magenta"}.get(result.verdict.value, "yellow")
    console.print(f"[bold {colour}]{result.verdict.value}[/]  reward {result.reward:g}  "
                  f"({result.reward_preset}: correctness {result.rewards.correctness:g}, speedup {result.rewards.speedup:g})")
    c = result.correctness
    console.print(f"correctness: {c.passed}/{c.trials} trials over {c.input_sets} input sets, "
                  f"max abs error {c.max_abs_error if c.max_abs_error is not None else '-'}")
    p = result.performance
    if p.meaningful and p.speedup is not None and p.candidate_ms and p.reference_ms:
        console.print(f"performance: {p.candidate_ms.median:.4g} ms vs reference {p.reference_ms.median:.4g} ms "
                      f"-> speedup {p.speedup:.3f}x (95% CI {p.speedup_ci95[0]:.3f}-{p.speedup_ci95[1]:.3f})" if p.speedup_ci95 else
                      f"-> speedup {p.speedup:.3f}x")
    else:
        console.print("performance: not measured (Triton interpreter on the CPU)" if not p.meaningful else "performance: -")
    for v in result.anti_cheat.violations + result.anti_cheat.warnings:
        console.print(f"[{'red' if v.severity.value == 'fatal' else 'yellow'}]{v.severity.value} {v.rule}[/]: {v.message}")
    console.print(f"feedback: {result.feedback}", markup=False, highlight=False)
    env = result.environment
    console.print(f"[dim]{env.device} · torch {env.torch} · triton {env.triton} · isolation {env.isolation} · "
                  f"{result.timings_ms.total / 1e3:.1f} s[/]")


@app.command()
def check(
    reference: Annotated[Path, typer.Argument(help="KernelBench-format reference (Model, get_inputs, get_init_inputs)")],
    candidate: Annotated[Path, typer.Argument(help="candidate defining ModelNew with @triton.jit kernels")],
    json_output: Annotated[bool, typer.Option("--json", help="print exactly one JSON result document")] = False,
    trials: Annotated[int, typer.Option(min=1, max=100, help="correctness trials")] = 5,
    timeout: Annotated[float, typer.Option(min=1.0, help="wall-clock limit in seconds")] = 120.0,
    device: Annotated[str, typer.Option(help="auto, cuda or cpu")] = "auto",
    seed: Annotated[int | None, typer.Option(help="fix the input salt (default: a fresh secret)")] = None,
    reward: Annotated[str, typer.Option(help="reward preset: tritonrl, fast_p or drkernel")] = "tritonrl",
    atol: Annotated[float | None, typer.Option(help="absolute tolerance override")] = None,
    rtol: Annotated[float | None, typer.Option(help="relative tolerance override")] = None,
) -> None:
    """Check CANDIDATE against REFERENCE; exit 0 only when it is correct and cheat-free."""
    if device not in ("auto", "cuda", "cpu"):
        err.print(f"error: --device must be auto, cuda or cpu, not {device!r}")
        raise typer.Exit(EXIT_USAGE)
    if reward not in RewardPreset.__args__:  # type: ignore[attr-defined]
        err.print(f"error: --reward must be one of {', '.join(RewardPreset.__args__)}, not {reward!r}")  # type: ignore[attr-defined]
        raise typer.Exit(EXIT_USAGE)
    try:
        problem = Problem(source=read_source(reference, "reference"), name=reference.stem)
        submission = Submission(source=read_source(candidate, "candidate"), name=candidate.stem)
    except InputFileError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    except ValueError as exc:  # pydantic validation, e.g. an empty reference
        err.print(f"error: {reference}: the reference is empty or invalid ({exc.errors()[0]['msg'] if hasattr(exc, 'errors') else exc})")
        raise typer.Exit(EXIT_USAGE) from None
    config = EvalConfig(trials=trials, timeout_s=timeout, device=device, seed=seed, atol=atol, rtol=rtol,  # type: ignore[arg-type]
                        reward=RewardConfig(preset=reward))  # type: ignore[arg-type]
    try:
        result = evaluate(problem, submission, config)
    except ProblemSourceError as exc:
        err.print(f"error: {reference}: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    if json_output:
        typer.echo(result.model_dump_json())
    else:
        print_summary(Console(), result)
    raise typer.Exit(exit_code(result))


# What each example candidate file is expected to get (used by `referee demo`).
EXPECTED_VERDICTS = {
    "candidate": Verdict.correct,
    "candidate_compile_error": Verdict.compile_error,
    "candidate_wrong": Verdict.incorrect,
    "candidate_runtime_error": Verdict.runtime_error,
}


@app.command()
def demo(
    examples: Annotated[Path, typer.Argument(help="directory of example problems")] = Path("examples"),
    device: Annotated[str, typer.Option(help="auto, cuda or cpu")] = "auto",
) -> None:
    """Check every example candidate and print a summary table (exit 1 if any verdict is unexpected)."""
    pairs = [
        (problem_dir, candidate)
        for problem_dir in sorted(p for p in examples.iterdir() if (p / "reference.py").is_file())
        for candidate in sorted(problem_dir.glob("candidate*.py"))
    ]
    if not pairs:
        err.print(f"error: no examples (DIR/*/reference.py) under {examples}")
        raise typer.Exit(EXIT_USAGE)
    console = Console()
    table = Table(title="Triton Referee: examples")
    for column in ("problem", "candidate", "verdict", "expected", "reward", "speedup", "seconds"):
        table.add_column(column)
    surprises = 0
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("checking", total=len(pairs))
        for problem_dir, candidate_path in pairs:
            progress.update(task, description=f"{problem_dir.name}/{candidate_path.name}")
            started = time.monotonic()
            result = evaluate(
                Problem(source=read_source(problem_dir / "reference.py", "reference"), name=problem_dir.name),
                Submission(source=read_source(candidate_path, "candidate")),
                EvalConfig(device=device),  # type: ignore[arg-type]
            )
            expected = EXPECTED_VERDICTS.get(candidate_path.stem)
            surprises += expected is not None and expected != result.verdict
            speedup = f"{result.performance.speedup:.2f}x" if result.performance.speedup is not None else "n/a (cpu)"
            colour = "green" if expected in (None, result.verdict) else "red"
            table.add_row(problem_dir.name, candidate_path.stem.removeprefix("candidate").lstrip("_") or "honest", f"[{colour}]{result.verdict.value}[/]",
                          expected.value if expected else "-", f"{result.reward:g}", speedup, f"{time.monotonic() - started:.1f}")
            progress.advance(task)
    console.print(table)
    if surprises:
        err.print(f"{surprises} example(s) got an unexpected verdict")
        raise typer.Exit(EXIT_FAILED)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
