"""The `referee` command line.

Exit codes of `referee check`: 0 correct; 1 the candidate failed a check; 2 usage error or an
unreadable, oversized or unusable input file; 3 Referee itself failed.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from triton_referee.sandbox.isolation import Isolation, IsolationName
from triton_referee.sandbox.selection import select_isolation
from triton_referee.worker import defaults
from triton_referee.worker.evaluate import detect_device, evaluate
from triton_referee.worker.models import (
    MAX_SOURCE_BYTES,
    Device,
    EvalConfig,
    EvaluationResult,
    Mode,
    Precision,
    Problem,
    RewardConfig,
    RewardPreset,
    Submission,
    Verdict,
)
from triton_referee.worker.settings import JudgeSettings
from triton_referee.worker.static_checks import ProblemSourceError

if TYPE_CHECKING:
    from .client import RefereeClient

EXIT_CORRECT, EXIT_FAILED, EXIT_USAGE, EXIT_INFRA = 0, 1, 2, 3
SettingsT = TypeVar("SettingsT")

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Triton Referee: verify Triton kernels against PyTorch references."
)
# Width of output that is not a terminal (CI logs, files): rich's default of 80 cut the tables'
# candidate names to `candidat…`. COLUMNS, when set, still wins.
LOG_WIDTH = 240


def make_console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    wide = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(stderr=stderr, width=LOG_WIDTH if wide else None)


err = make_console(stderr=True)


def results_table(title: str, columns: tuple[str, ...]) -> Table:
    """A table whose cells wrap rather than end in `…` when the terminal is narrow."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def require_device(device: str) -> None:
    """--device cuda on a machine without an NVIDIA GPU is a usage error (2), not Referee's fault (3)."""
    if device == "cuda" and detect_device() != "cuda":
        err.print("error: --device cuda, but this machine has no NVIDIA GPU (no /dev/nvidia*); use --device cpu or auto")
        raise typer.Exit(EXIT_USAGE)


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


def _settings_or_usage_error(make: Callable[[], SettingsT], options: dict[str, str] | None = None) -> SettingsT:
    """Settings from the environment (and the options), or exit 2 naming what is wrong: a bad
    REFEREE_* value is a usage error, as a bad option is. `options` maps fields to their options."""
    try:
        return make()
    except ValidationError as exc:
        for problem in exc.errors():
            field = ".".join(str(part) for part in problem["loc"])
            option = (options or {}).get(field)
            where = f"{option} or REFEREE_{field.upper()}" if option else f"REFEREE_{field.upper()}"
            err.print(f"error: {where}: {problem['msg']}", markup=False, highlight=False)
        raise typer.Exit(EXIT_USAGE) from None


def judge_settings() -> JudgeSettings:
    """This command's settings (REFEREE_LOCKDOWN, REFEREE_HARNESS_PYTHON, ...; docs/settings.md), read
    once, or exit 2 naming a bad value. --isolation is an option here, not REFEREE_ISOLATION."""
    return _settings_or_usage_error(JudgeSettings)


def choose_isolation(name: IsolationName, settings: JudgeSettings) -> Isolation:
    """The backend for --isolation (typer has checked the name), or exit 2 saying why it cannot run here."""
    try:
        isolation = select_isolation(name, lockdown=settings.lockdown, docker=settings.docker_options())
    except RuntimeError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    if isolation.name == "process":
        err.print(
            "warning: isolation 'process' confines nothing beyond a clean environment and the audit hook; "
            "it is for development only, never for untrusted candidates"
        )
    return isolation


IsolationOption = Annotated[
    IsolationName,
    typer.Option(help="auto (docker, then bwrap, then unshare), docker, bwrap, unshare or process (development only)"),
]
PrecisionOption = Annotated[
    Precision,
    typer.Option(
        help="inputs and both models' parameters in this dtype (KernelBench's switch; fp16/bf16 default to atol = rtol = 1e-2)"
    ),
]
DeviceOption = Annotated[Device, typer.Option(help="auto takes cuda when this machine has an NVIDIA GPU")]
CompileBaselineOption = Annotated[
    bool, typer.Option("--compile-baseline", help="also time torch.compile(reference): speedup over it next to eager")
]


def exit_code(result: EvaluationResult) -> int:
    if result.verdict == Verdict.correct:
        return EXIT_CORRECT
    return EXIT_INFRA if result.verdict == Verdict.infrastructure_error else EXIT_FAILED


def print_summary(console: Console, result: EvaluationResult) -> None:
    colour = {"correct": "green", "incorrect": "red", "cheating": "magenta"}.get(result.verdict.value, "yellow")
    console.print(
        f"[bold {colour}]{result.verdict.value}[/]  reward {result.reward:g}  "
        f"({result.reward_preset}: correctness {result.rewards.correctness:g}, speedup {result.rewards.speedup:g})"
    )
    c = result.correctness
    console.print(
        f"correctness: {c.passed}/{c.trials} trials over {c.input_sets} input sets, "
        f"max abs error {c.max_abs_error if c.max_abs_error is not None else '-'}"
    )
    p = result.performance
    if p.meaningful and p.speedup is not None and p.candidate_ms and p.reference_ms:
        console.print(
            f"performance: {p.candidate_ms.median:.4g} ms vs reference {p.reference_ms.median:.4g} ms "
            f"-> speedup {p.speedup:.3f}x (95% CI {p.speedup_ci95[0]:.3f}-{p.speedup_ci95[1]:.3f})"
            if p.speedup_ci95
            else f"-> speedup {p.speedup:.3f}x"
        )
    else:
        console.print("performance: not measured (Triton interpreter on the CPU)" if not p.meaningful else "performance: -")
    if p.speedup_vs_compiled is not None and p.compiled_reference_ms:
        console.print(
            f"torch.compile baseline: {p.compiled_reference_ms.median:.4g} ms -> speedup {p.speedup_vs_compiled:.3f}x over it"
        )
    for v in result.anti_cheat.violations + result.anti_cheat.warnings:
        console.print(f"[{'red' if v.severity.value == 'fatal' else 'yellow'}]{v.severity.value} {v.rule}[/]: {v.message}")
    console.print(f"feedback: {result.feedback}", markup=False, highlight=False)
    env = result.environment
    console.print(
        f"[dim]{env.device} · torch {env.torch} · triton {env.triton} · isolation {env.isolation} · "
        f"{result.timings_ms.total / 1e3:.1f} s[/]"
    )


@app.command()
def check(
    reference: Annotated[Path, typer.Argument(help="KernelBench-format reference (Model, get_inputs, get_init_inputs)")],
    candidate: Annotated[Path, typer.Argument(help="candidate defining ModelNew with @triton.jit kernels")],
    json_output: Annotated[bool, typer.Option("--json", help="print exactly one JSON result document")] = False,
    trials: Annotated[int, typer.Option(min=1, max=100, help="correctness trials")] = 5,
    timeout: Annotated[float, typer.Option(min=1.0, help="wall-clock limit in seconds")] = 120.0,
    device: DeviceOption = "auto",
    seed: Annotated[int | None, typer.Option(help="fix the input salt (default: a fresh secret)")] = None,
    reward: Annotated[RewardPreset, typer.Option(help="reward preset")] = "tritonrl",
    atol: Annotated[float | None, typer.Option(help="absolute tolerance override")] = None,
    rtol: Annotated[float | None, typer.Option(help="relative tolerance override")] = None,
    output_format: Annotated[
        Literal["text", "json", "github"], typer.Option("--format", help="github: workflow annotations on the offending lines")
    ] = "text",
    junit: Annotated[Path | None, typer.Option(help="also write the result as JUnit XML to this file")] = None,
    precision: PrecisionOption = "fp32",
    compile_baseline: CompileBaselineOption = False,
    isolation: IsolationOption = IsolationName.auto,
    mode: Annotated[
        Mode,
        typer.Option(
            help="strict (default: random parameters, extra input sets and value ranges) or "
            "kernelbench (the published inputs only, comparable with published numbers)"
        ),
    ] = "strict",
) -> None:
    """Check CANDIDATE against REFERENCE; exit 0 only when it is correct and cheat-free."""
    settings = judge_settings()
    require_device(device)
    try:
        problem = Problem(source=read_source(reference, "reference"), name=reference.stem)
        candidate_source = read_source(candidate, "candidate")
        submission = Submission(source=candidate_source, name=candidate.stem)
    except InputFileError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    except ValueError as exc:  # pydantic validation, e.g. an empty reference
        err.print(
            f"error: {reference}: the reference is empty or invalid ({exc.errors()[0]['msg'] if hasattr(exc, 'errors') else exc})"
        )
        raise typer.Exit(EXIT_USAGE) from None
    config = EvalConfig(
        trials=trials,
        timeout_s=timeout,
        device=device,
        seed=seed,
        atol=atol,
        rtol=rtol,
        precision=precision,
        compile_baseline=compile_baseline,
        reward=RewardConfig(preset=reward),
        mode=mode,
    )
    backend = choose_isolation(isolation, settings)
    try:
        result = evaluate(
            problem,
            submission,
            config,
            isolation=backend,
            python=settings.harness_python,
            audit_hook=settings.audit_hook,
            allow_native_code=settings.allow_native_code,
        )
    except ProblemSourceError as exc:
        err.print(f"error: {reference}: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    except Exception as exc:  # a fault of Referee itself: exit 3, never the candidate's 1
        err.print(f"internal error: {type(exc).__name__}: {exc}")
        raise typer.Exit(EXIT_INFRA) from None
    if junit is not None:
        from .reports import Case, junit_xml

        problem_name = reference.parent.name if reference.stem == "reference" else reference.stem
        junit.write_text(
            junit_xml([Case(name=str(candidate), problem=problem_name, result=result, candidate_path=str(candidate))])
        )
    if json_output or output_format == "json":
        typer.echo(result.model_dump_json())
    elif output_format == "github":
        from .reports import github_annotations

        for line in github_annotations(result, str(candidate), candidate_source):
            typer.echo(line)
    else:
        print_summary(make_console(), result)
    raise typer.Exit(exit_code(result))


def _default_jobs() -> int:
    """Evaluations at once: each runs two harness processes, so about one per two cores."""
    return max(1, min(8, (os.cpu_count() or 2) // 2))


@app.command("check-kernels")
def check_kernels(
    candidates: Annotated[
        list[Path], typer.Argument(help="candidate files; each is checked against REFERENCE_NAME in its directory")
    ],
    reference_name: Annotated[str, typer.Option(help="the reference's file name next to each candidate")] = "reference.py",
    trials: Annotated[int, typer.Option(min=1, max=100, help="correctness trials")] = 5,
    timeout: Annotated[float, typer.Option(min=1.0, help="wall-clock limit per candidate in seconds")] = 120.0,
    device: DeviceOption = "auto",
    output_format: Annotated[Literal["text", "github"], typer.Option("--format", help="github: workflow annotations")] = "text",
    junit: Annotated[Path | None, typer.Option(help="write every result as one JUnit XML file")] = None,
    jobs: Annotated[
        int | None, typer.Option(min=1, help="candidates checked at once (default: one per two cores, at most 8)")
    ] = None,
    isolation: IsolationOption = IsolationName.auto,
) -> None:
    """Check several candidates, each against the reference next to it (the pre-commit hook and the
    GitHub Action use this). Files without a reference beside them, and references, are skipped.
    Candidates run in parallel; on a GPU only one of them times at a time (the timing lock).
    Exit 0 only when every checked candidate is correct; 3 if Referee failed on one."""
    from triton_referee.worker.timing_lock import TimingLock

    from .reports import Case, github_annotations, junit_xml

    settings = judge_settings()
    require_device(device)
    config = EvalConfig(trials=trials, timeout_s=timeout, device=device)
    backend = choose_isolation(isolation, settings)
    # Read everything first: a bad file is a usage error before any evaluation starts.
    work: list[tuple[Path, str, Problem]] = []
    for candidate in candidates:
        reference = candidate.parent / reference_name
        if candidate.name == reference_name or not reference.is_file():
            err.print(f"skipped {candidate}: no {reference_name} beside it")
            continue
        try:
            source = read_source(candidate, "candidate")
            work.append((candidate, source, Problem(source=read_source(reference, "reference"), name=candidate.parent.name)))
        except (InputFileError, ValueError) as exc:
            err.print(f"error: {candidate}: {exc}")
            raise typer.Exit(EXIT_USAGE) from None
    on_gpu = device == "cuda" or (device == "auto" and detect_device() == "cuda")
    timing_lock = TimingLock.for_gpu(directory=settings.lock_dir, exclusive=settings.exclusive_timing) if on_gpu else None

    def run_one(entry: tuple[Path, str, Problem]) -> EvaluationResult:
        candidate, source, problem = entry
        return evaluate(
            problem,
            Submission(source=source, name=candidate.stem),
            config,
            isolation=backend,
            timing_lock=timing_lock,
            python=settings.harness_python,
            audit_hook=settings.audit_hook,
            allow_native_code=settings.allow_native_code,
        )

    cases: list[Case] = []
    console = make_console()
    with ThreadPoolExecutor(max_workers=min(jobs or _default_jobs(), max(1, len(work)))) as pool:
        futures = [pool.submit(run_one, entry) for entry in work]
        for (candidate, source, _), future in zip(work, futures, strict=True):  # printed in the order given
            try:
                result = future.result()
            except ProblemSourceError as exc:
                err.print(f"error: {candidate.parent / reference_name}: {exc}")
                for other in futures:
                    other.cancel()
                raise typer.Exit(EXIT_USAGE) from None
            cases.append(
                Case(
                    name=str(candidate),
                    problem=candidate.parent.name,
                    result=result,
                    candidate_path=str(candidate),
                    source=source,
                )
            )
            if output_format == "github":
                for line in github_annotations(result, str(candidate), source):
                    typer.echo(line)
            else:
                console.print(f"[bold]{candidate}[/]")
                print_summary(console, result)
    if junit is not None:
        junit.write_text(junit_xml(cases))
    verdicts = [case.result.verdict for case in cases]
    err.print(f"checked {len(cases)} candidate(s): {sum(v == Verdict.correct for v in verdicts)} correct")
    if Verdict.infrastructure_error in verdicts:
        raise typer.Exit(EXIT_INFRA)
    raise typer.Exit(EXIT_FAILED if any(v != Verdict.correct for v in verdicts) else EXIT_CORRECT)


# What each example candidate file is expected to get (used by `referee demo`).
EXPECTED_VERDICTS = {
    "candidate": Verdict.correct,
    "candidate_compile_error": Verdict.compile_error,
    "candidate_wrong": Verdict.incorrect,
    "candidate_runtime_error": Verdict.runtime_error,
}


def _example_pairs(examples: Path) -> list[tuple[Path, Path]]:
    if not examples.is_dir():
        return []
    return [
        (problem_dir, candidate)
        for problem_dir in sorted(p for p in examples.iterdir() if (p / "reference.py").is_file())
        for candidate in sorted(problem_dir.glob("candidate*.py"))
    ]


def _score_examples(client: RefereeClient, examples: Path, device: str, title: str) -> int:
    """Submit every example pair as one batch, follow it with a progress bar, print the table;
    return the number of unexpected verdicts (a missing result counts as one)."""
    pairs = _example_pairs(examples)
    if not pairs:
        err.print(f"error: no examples (DIR/*/reference.py) under {examples}")
        raise typer.Exit(EXIT_USAGE)
    items = [
        {
            "reference": read_source(problem_dir / "reference.py", "reference"),
            "candidate": read_source(path, "candidate"),
            "name": f"{problem_dir.name}/{path.stem}",
            "device": device,
        }
        for problem_dir, path in pairs
    ]
    console = make_console()
    batch = client.create_batch(items, name=title)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"checking {len(items)} candidates", total=len(items))

        def advance(item: dict) -> None:
            progress.update(task, advance=1, description=f"{items[item['index']]['name']}: {item['result']['verdict']}")

        results = client.follow(batch["id"], len(items), advance)
    table = results_table(title, ("problem", "candidate", "verdict", "expected", "reward", "speedup", "seconds"))
    surprises = 0
    for index, (problem_dir, path) in enumerate(pairs):
        expected = EXPECTED_VERDICTS.get(path.stem)
        result = results.get(index)
        label = path.stem.removeprefix("candidate").lstrip("_") or "honest"
        if result is None:
            surprises += 1
            table.add_row(problem_dir.name, label, "[red]no result[/]", expected.value if expected else "-", "-", "-", "-")
            continue
        verdict = result["verdict"]
        surprises += expected is not None and expected.value != verdict
        speedup = result["performance"].get("speedup")
        colour = "green" if expected is None or expected.value == verdict else "red"
        table.add_row(
            problem_dir.name,
            label,
            f"[{colour}]{verdict}[/]",
            expected.value if expected else "-",
            f"{result['reward']:g}",
            f"{speedup:.2f}x" if speedup is not None else "n/a (cpu)",
            f"{result['timings_ms']['total'] / 1e3:.1f}",
        )
    console.print(table)
    return surprises


@app.command()
def demo(
    examples: Annotated[Path, typer.Argument(help="directory of example problems")] = Path("examples"),
    device: DeviceOption = "auto",
    workers: Annotated[int, typer.Option(min=1, help="evaluations run at once")] = 2,
) -> None:
    """Start the embedded server, submit every example over HTTP, print the table, stop (exit 1 if a verdict is unexpected)."""
    from .client import RefereeClient
    from .server import background_server
    from .settings import Settings

    if not _example_pairs(examples):
        err.print(f"error: no examples (DIR/*/reference.py) under {examples}")
        raise typer.Exit(EXIT_USAGE)
    settings = Settings(redis_url=None, auth="off", embedded_workers=workers)
    with background_server(settings) as url, RefereeClient(url) as client:
        err.print(f"[dim]embedded Referee at {url}[/]")
        surprises = _score_examples(client, examples, device, "Triton Referee: examples")
    if surprises:
        err.print(f"{surprises} example(s) got an unexpected verdict")
        raise typer.Exit(EXIT_FAILED)


@dataclass
class BatchItem:
    problem: str
    name: str
    reference: str
    candidate: str | None  # None: the completion held no code (answered locally, never sent)
    candidate_path: str | None = None
    expected: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


def _manifest_items(manifest: Path) -> list[BatchItem]:
    """JSONL: {"reference": PATH, "candidate": PATH | "completion": TEXT, "name"?, "problem"?, "expected"?, "options"?};
    paths are relative to the manifest; `reference_source` / `candidate_source` give sources inline."""
    from .completions import extract_candidate

    items = []
    for number, line in enumerate(manifest.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            entry = json.loads(line)
            if not isinstance(entry, dict):
                raise ValueError("not a JSON object")
            if "reference_source" in entry:
                reference, problem = entry["reference_source"], entry.get("problem", f"problem{number}")
            else:
                path = manifest.parent / entry["reference"]
                reference = read_source(path, "reference")
                problem = entry.get("problem") or (path.parent.name if path.stem == "reference" else path.stem)
            candidate_path = None
            if "candidate_source" in entry:
                candidate = entry["candidate_source"]
            elif "completion" in entry:
                candidate = extract_candidate(entry["completion"])
            else:
                candidate_path = str(manifest.parent / entry["candidate"])
                candidate = read_source(Path(candidate_path), "candidate")
            name = entry.get("name") or (Path(candidate_path).stem if candidate_path else f"item{number}")
            items.append(
                BatchItem(problem, name, reference, candidate, candidate_path, entry.get("expected"), entry.get("options", {}))
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise InputFileError(f"{manifest}:{number}: {type(exc).__name__}: {exc}") from exc
    return items


# KernelBench's generation scripts write `level_{L}_problem_{N}_sample_{K}_kernel.py` into a run
# folder; its problems are `{N}_{Name}.py` in `KernelBench/level{L}/`.
KERNELBENCH_SAMPLE = re.compile(r"level_(\d+)_problem_(\d+)_sample_(\d+)_kernel\.py")
KERNELBENCH_PROBLEM = re.compile(r"(\d+)_.*\.py")


def _kernelbench_level(folder: Path) -> int | None:
    """The level of a KernelBench dataset folder (`level1`, `level_2`), from its name."""
    match = re.fullmatch(r"level_?(\d+)", folder.resolve().name)
    return int(match.group(1)) if match else None


def _kernelbench_samples(candidates: Path) -> dict[tuple[int, int], list[tuple[int, Path]]]:
    """(level, problem id) -> [(sample id, path)] of KernelBench's own output files in CANDIDATES."""
    found: dict[tuple[int, int], list[tuple[int, Path]]] = {}
    for path in candidates.glob("level_*_problem_*_sample_*_kernel.py"):
        match = KERNELBENCH_SAMPLE.fullmatch(path.name)
        if match:
            level, problem, sample = map(int, match.groups())
            found.setdefault((level, problem), []).append((sample, path))
    return {key: sorted(paths) for key, paths in found.items()}


def _directory_items(problems: Path, candidates: Path | None) -> list[BatchItem]:
    """DIR/*/reference.py with DIR/*/candidate*.py; or, with --candidates CDIR, KernelBench-style
    problem files DIR/*.py (or DIR/*/reference.py) and their candidates: CDIR/STEM.py, CDIR/STEM/*.py,
    or KernelBench's own CDIR/level_L_problem_N_sample_K_kernel.py for problem `N_Name.py` of level L
    (L from DIR's name, `level1`, or from the samples when they are all of one level)."""
    if not problems.is_dir():
        raise InputFileError(
            f"problems folder {problems} does not exist" if not problems.exists() else f"{problems} is not a folder"
        )
    if candidates is None:
        return [
            BatchItem(
                problem_dir.name,
                path.stem,
                read_source(problem_dir / "reference.py", "reference"),
                read_source(path, "candidate"),
                str(path),
                EXPECTED_VERDICTS[path.stem].value if path.stem in EXPECTED_VERDICTS else None,
            )
            for problem_dir, path in _example_pairs(problems)
        ]
    if not candidates.is_dir():
        raise InputFileError(
            f"candidates folder {candidates} does not exist"
            if not candidates.exists()
            else f"candidates {candidates} is not a folder"
        )
    references = sorted(problems.glob("*.py")) + sorted(problems.glob("*/reference.py"))
    if not references:
        raise InputFileError(f"no problems in {problems} (expected NAME.py or NAME/reference.py files)")
    samples = _kernelbench_samples(candidates)
    level = _kernelbench_level(problems)
    if level is None and len({lv for lv, _ in samples}) == 1:
        level = next(iter(samples))[0]
    items = []
    for reference in sorted(references, key=_problem_order):
        stem = reference.parent.name if reference.name == "reference.py" else reference.stem
        found = sorted(candidates.glob(f"{stem}.py")) + sorted((candidates / stem).glob("*.py"))
        number = KERNELBENCH_PROBLEM.fullmatch(reference.name)
        kernelbench = samples.get((level, int(number.group(1)))) if number and level is not None else None
        if not found and not kernelbench:
            continue
        source = read_source(reference, "reference")
        items += [
            BatchItem(
                stem, path.stem if path.parent != candidates else path.name, source, read_source(path, "candidate"), str(path)
            )
            for path in found
        ]
        items += [
            BatchItem(stem, f"sample_{sample}", source, read_source(path, "candidate"), str(path))
            for sample, path in kernelbench or []
        ]
    if not items:
        kinds = "CDIR/NAME.py, CDIR/NAME/*.py" + (
            f" or level_{level}_problem_N_sample_K_kernel.py"
            if level is not None
            else " or level_L_problem_N_sample_K_kernel.py (level from a folder named levelL)"
        )
        raise InputFileError(
            f"candidates folder {candidates} has no candidate for any of the {len(references)} problems in {problems} "
            f"(expected {kinds})"
        )
    return items


def _problem_order(path: Path) -> tuple[int, str]:
    """KernelBench's numbered problems in numeric order (2_ before 10_), the rest by name."""
    match = KERNELBENCH_PROBLEM.fullmatch(path.name)
    return (int(match.group(1)) if match else 1 << 30, path.name)


@contextmanager
def _batch_server(embedded: bool, server: str, workers: int) -> Iterator[str]:
    """The server's URL: --server, or an embedded one started for this batch and stopped after it."""
    if not embedded:
        yield server
        return
    from .server import background_server
    from .settings import Settings

    with background_server(Settings(redis_url=None, auth="off", embedded_workers=workers)) as url:
        err.print(f"[dim]embedded Referee at {url}[/]")
        yield url


def _write_batch_outputs(out: Path, items: list[BatchItem], results: list[EvaluationResult], title: str) -> dict[str, Any]:
    from .reports import Case, html_report, summarize

    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(results, [item.problem for item in items])
    with (out / "results.jsonl").open("w") as stream:
        for index, (item, result) in enumerate(zip(items, results, strict=True)):
            stream.write(
                json.dumps(
                    {
                        "index": index,
                        "problem": item.problem,
                        "name": item.name,
                        "candidate_path": item.candidate_path,
                        "result": result.model_dump(mode="json"),
                    }
                )
                + "\n"
            )
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    cases = [Case(item.name, item.problem, result, item.candidate_path) for item, result in zip(items, results, strict=True)]
    (out / "report.html").write_text(html_report(cases, summary, title))
    return summary


@app.command()
def batch(
    source: Annotated[
        Path,
        typer.Argument(
            help="DIR/*/reference.py with DIR/*/candidate*.py, a problem directory with --candidates, or a JSONL manifest"
        ),
    ],
    server: Annotated[str, typer.Option(envvar="REFEREE_SERVER", help="base URL of a Referee server")] = "http://127.0.0.1:8000",
    api_key: Annotated[str | None, typer.Option(envvar="REFEREE_API_KEY", help="sent as X-API-Key")] = None,
    device: DeviceOption = "auto",
    candidates: Annotated[
        Path | None,
        typer.Option(
            help="directory of candidates: CDIR/PROBLEM.py, CDIR/PROBLEM/*.py, "
            "or KernelBench's level_L_problem_N_sample_K_kernel.py"
        ),
    ] = None,
    kernelbench_level: Annotated[
        Path | None,
        typer.Option(
            help="a KernelBench dataset folder (KernelBench/level1); SOURCE is then "
            "the run folder KernelBench wrote its samples to"
        ),
    ] = None,
    embedded: Annotated[
        bool, typer.Option("--embedded", help="start an embedded server for this batch instead of using --server")
    ] = False,
    workers: Annotated[int, typer.Option(min=1, help="with --embedded: evaluations run at once")] = 2,
    out: Annotated[Path | None, typer.Option(help="write results.jsonl, summary.json and report.html here")] = None,
    trials: Annotated[int | None, typer.Option(min=1, max=100, help="correctness trials per candidate")] = None,
    timeout: Annotated[float, typer.Option(min=1.0, help="seconds to wait for the whole batch")] = 3600.0,
    precision: PrecisionOption = "fp32",
    compile_baseline: CompileBaselineOption = False,
) -> None:
    """Score many candidates on a server as one batch, with a progress bar, a table and a summary
    (fast_p at p = 0, 1, 1.5, 2; pass@k and best-of-samples fast_p per problem; geometric-mean
    speedup; verdicts; violations by rule)."""
    import httpx

    from .client import ApiError, RefereeClient, no_result_in_time
    from .completions import no_code_result
    from .reports import summarize

    if kernelbench_level is not None:
        if candidates is not None:
            err.print("error: with --kernelbench-level, SOURCE is the candidates folder; --candidates is not used")
            raise typer.Exit(EXIT_USAGE)
        source, candidates = kernelbench_level, source
    try:
        items = _manifest_items(source) if source.is_file() else _directory_items(source, candidates)
    except InputFileError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    if not items:
        err.print(
            f"error: no candidates found under {source} (DIR/*/reference.py with DIR/*/candidate*.py; or give --candidates)"
        )
        raise typer.Exit(EXIT_USAGE)
    sent = [i for i, item in enumerate(items) if item.candidate is not None]
    shared: dict[str, Any] = {
        "device": device,
        **({"trials": trials} if trials else {}),
        **({"precision": precision} if precision != "fp32" else {}),
        **({"compile_baseline": True} if compile_baseline else {}),
    }
    bodies = [
        {
            "reference": items[i].reference,
            "candidate": items[i].candidate,
            "name": f"{items[i].problem}/{items[i].name}",
            **shared,
            **items[i].options,
        }
        for i in sent
    ]
    console = make_console()
    found: dict[int, dict[str, Any]] = {}
    try:
        with _batch_server(embedded, server, workers) as url, RefereeClient(url, api_key) as client:
            if bodies:
                created = client.create_batch(bodies, name=f"referee batch {source}")
                with Progress(console=console, transient=True) as progress:
                    task = progress.add_task(f"checking {len(bodies)} candidates", total=len(bodies))

                    def advance(item: dict) -> None:
                        progress.update(
                            task, advance=1, description=f"{bodies[item['index']]['name']}: {item['result']['verdict']}"
                        )

                    found = client.follow(created["id"], len(bodies), advance, timeout=timeout)
    except (ApiError, httpx.HTTPError) as exc:
        err.print(f"error: {server}: {exc}")
        raise typer.Exit(EXIT_INFRA) from None
    results: list[EvaluationResult] = [no_code_result() for _ in items]
    for position, index in enumerate(sent):
        view = found.get(position)
        results[index] = EvaluationResult.model_validate(view) if view else no_result_in_time(f"item-{index}", timeout)
    table = results_table(
        f"Triton Referee: {source}", ("problem", "candidate", "verdict", "expected", "reward", "speedup", "seconds")
    )
    surprises = 0
    for item, result in zip(items, results, strict=True):
        verdict = result.verdict.value
        surprises += item.expected is not None and item.expected != verdict
        colour = "green" if item.expected in (None, verdict) else "red"
        speedup = result.performance.speedup
        table.add_row(
            item.problem,
            item.name,
            f"[{colour}]{verdict}[/]",
            item.expected or "-",
            f"{result.reward:g}",
            f"{speedup:.2f}x" if speedup is not None else "n/a (cpu)",
            f"{result.timings_ms.total / 1e3:.1f}",
        )
    console.print(table)
    problems = [item.problem for item in items]
    summary = _write_batch_outputs(out, items, results, f"Triton Referee: {source}") if out else summarize(results, problems)
    fast_p = ", ".join(f"fast_{p}={'n/a' if v is None else f'{v:.3f}'}" for p, v in summary["fast_p"].items())
    geomean = summary["geomean_speedup"]
    console.print(f"{summary['total']} candidates: {', '.join(f'{k} {v}' for k, v in summary['verdicts'].items() if v)}")
    console.print(f"{fast_p}; geometric-mean speedup {'n/a' if geomean is None else f'{geomean:.3f}x'}")
    per_problem = summary["per_problem"]
    pass_at = ", ".join(f"pass@{k}={v:.3f}" for k, v in per_problem["pass_at_k"].items())
    best = ", ".join(f"fast_{p}={'n/a' if v is None else f'{v:.3f}'}" for p, v in per_problem["fast_p"].items())
    console.print(
        f"{per_problem['problems']} problems, {per_problem['samples_min']}-{per_problem['samples_max']} samples each: "
        f"{pass_at}; best sample per problem: {best}"
    )
    if summary["violations_by_rule"]:
        console.print("violations: " + ", ".join(f"{k} {v}" for k, v in summary["violations_by_rule"].items()))
    if out:
        console.print(f"wrote {out / 'results.jsonl'}, {out / 'summary.json'}, {out / 'report.html'}")
    if surprises:
        err.print(f"{surprises} candidate(s) got an unexpected verdict")
        raise typer.Exit(EXIT_FAILED)


@app.command()
def submit(
    reference: Annotated[Path, typer.Argument(help="KernelBench-format reference")],
    candidate: Annotated[Path, typer.Argument(help="candidate defining ModelNew")],
    server: Annotated[str, typer.Option(envvar="REFEREE_SERVER", help="base URL of a Referee server")] = "http://127.0.0.1:8000",
    api_key: Annotated[str | None, typer.Option(envvar="REFEREE_API_KEY", help="sent as X-API-Key")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="print exactly one JSON result document")] = False,
    trials: Annotated[int, typer.Option(min=1, max=100, help="correctness trials")] = 5,
    seed: Annotated[int | None, typer.Option(help="fix the input salt")] = None,
    timeout: Annotated[float, typer.Option(min=1.0, help="seconds to wait for the result")] = 3600.0,
) -> None:
    """Submit one evaluation to a server and wait for its result (exit codes as `referee check`)."""
    import httpx

    from .client import ApiError, RefereeClient

    try:
        body = {
            "reference": read_source(reference, "reference"),
            "candidate": read_source(candidate, "candidate"),
            "trials": trials,
            "seed": seed,
            "name": candidate.stem,
        }
    except InputFileError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    try:
        with RefereeClient(server, api_key) as client:
            view = client.submit(body, wait=min(timeout, 60.0))
            if "verdict" not in view:
                view = client.result(view["id"], timeout=timeout)
    except ApiError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_USAGE if exc.status in (404, 413, 422) else EXIT_INFRA) from None
    except httpx.HTTPError as exc:
        err.print(f"error: {server}: {exc}")
        raise typer.Exit(EXIT_INFRA) from None
    if "verdict" not in view:
        err.print(f"error: no result after {timeout:g} s (evaluation {view['id']} is {view['status']})")
        raise typer.Exit(EXIT_INFRA)
    result = EvaluationResult.model_validate(view)
    if json_output:
        typer.echo(json.dumps(view))
    else:
        print_summary(make_console(), result)
    raise typer.Exit(exit_code(result))


@app.command()
def serve(
    embedded: Annotated[
        bool, typer.Option("--embedded", help="in-process queue and worker, no Redis (the default without a Redis URL)")
    ] = False,
    redis_url: Annotated[str | None, typer.Option(help="Redis for the queue and results (or REFEREE_REDIS_URL)")] = None,
    host: Annotated[str | None, typer.Option(help="address to listen on (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default 8000)")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="embedded mode: evaluations run at once")] = None,
    processes: Annotated[int, typer.Option(min=1, help="Redis mode: API processes sharing the port (uvicorn workers)")] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
) -> None:
    """Serve the HTTP API. Settings come from REFEREE_* variables; these options override them."""
    from .server import serve as run_server
    from .settings import Settings, redact_url

    if embedded and redis_url:
        err.print("error: --embedded and --redis-url exclude each other")
        raise typer.Exit(EXIT_USAGE)
    overrides: dict = {
        key: value for key, value in {"host": host, "port": port, "embedded_workers": workers}.items() if value is not None
    }
    if embedded:
        overrides["redis_url"] = None
    elif redis_url:
        overrides["redis_url"] = redis_url
    settings = _settings_or_usage_error(
        lambda: Settings(**overrides),
        {"redis_url": "--redis-url", "host": "--host", "port": "--port", "embedded_workers": "--workers"},
    )
    try:
        settings.check()
    except ValueError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    err.print(
        f"Referee API on http://{settings.host}:{settings.port} ({'embedded' if settings.embedded else redact_url(settings.redis_url)}; "
        f"auth {'on' if settings.auth_enabled else 'off'})"
    )
    if processes > 1 and settings.embedded:
        err.print("error: --processes needs Redis (--redis-url): embedded mode keeps its queue in one process")
        raise typer.Exit(EXIT_USAGE)
    run_server(settings, log_level=log_level, processes=processes)


WORKER_OPTIONS = {
    "redis_url": "--redis-url",
    "gpu": "--gpu",
    "queue_name": "--queue",
    "worker_name": "--name",
    "burst": "--burst",
    "monitoring_interval_s": "--monitoring-interval",
    "heartbeat_grace_s": "--heartbeat-grace",
    "registry_maintenance_interval_s": "--maintenance-interval",
    "worker_ttl_s": "--worker-ttl",
    "worker_concurrency": "--concurrency",
    "warm_pool": "--warm-pool",
    "isolation": "--isolation",
}


@app.command()
def worker(
    redis_url: Annotated[str | None, typer.Option(help="Redis holding the queue (or REFEREE_REDIS_URL)")] = None,
    gpu: Annotated[int | None, typer.Option(min=0, help="pin this GPU (CUDA_VISIBLE_DEVICES) for every job")] = None,
    queue: Annotated[str | None, typer.Option(help=f"queue name (default {defaults.QUEUE_NAME}, or REFEREE_QUEUE_NAME)")] = None,
    name: Annotated[str | None, typer.Option(help="worker name (default: host, GPU and pid)")] = None,
    burst: Annotated[bool | None, typer.Option("--burst/--no-burst", help="exit when the queue is empty (default off)")] = None,
    monitoring_interval: Annotated[
        int | None, typer.Option(min=1, help=f"seconds between job heartbeats (default {defaults.MONITORING_INTERVAL_S})")
    ] = None,
    heartbeat_grace: Annotated[
        int | None,
        typer.Option(
            min=1,
            help=f"seconds a heartbeat may be late before the job counts as abandoned (default {defaults.HEARTBEAT_GRACE_S})",
        ),
    ] = None,
    maintenance_interval: Annotated[
        int | None,
        typer.Option(
            min=1, help=f"seconds between this worker's registry sweeps (default {defaults.REGISTRY_MAINTENANCE_INTERVAL_S})"
        ),
    ] = None,
    worker_ttl: Annotated[
        int | None,
        typer.Option(min=5, help=f"seconds this worker stays registered without a heartbeat (default {defaults.WORKER_TTL_S})"),
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            min=1, help=f"RQ workers on this GPU, sharing its warm pool and timing lock (default {defaults.WORKER_CONCURRENCY})"
        ),
    ] = None,
    warm_pool: Annotated[
        bool | None,
        typer.Option("--warm-pool/--no-warm-pool", help="fork harness processes from a zygote with torch imported (default on)"),
    ] = None,
    isolation: Annotated[
        IsolationName | None,
        typer.Option(help=f"confinement of harness processes (default {defaults.ISOLATION}, or REFEREE_ISOLATION)"),
    ] = None,
) -> None:
    """Run one RQ worker (one per GPU): takes evaluations from Redis and runs them. Settings come from
    REFEREE_* variables (docs/settings.md); these options override them."""
    from triton_referee.worker.main import pin_gpu, run_worker
    from triton_referee.worker.settings import WorkerSettings

    pin_gpu(gpu)  # first: nothing below may see another GPU
    given: dict[str, Any] = {
        "redis_url": redis_url,
        "gpu": gpu,
        "queue_name": queue,
        "worker_name": name,
        "burst": burst,
        "monitoring_interval_s": monitoring_interval,
        "heartbeat_grace_s": heartbeat_grace,
        "registry_maintenance_interval_s": maintenance_interval,
        "worker_ttl_s": worker_ttl,
        "worker_concurrency": concurrency,
        "warm_pool": warm_pool,
        "isolation": isolation,
    }
    overrides = {key: value for key, value in given.items() if value is not None}
    settings = _settings_or_usage_error(lambda: WorkerSettings(**overrides), WORKER_OPTIONS)
    run_worker(settings)


@app.command()
def openapi() -> None:
    """Print the API's OpenAPI document as YAML (`referee openapi > openapi.yaml`)."""
    from .openapi import to_yaml

    typer.echo(to_yaml(), nl=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
