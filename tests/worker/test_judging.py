"""How correctness and fairness are judged (docs/judging.md), on the CPU with Triton's interpreter,
in processes forked by the warm pool.

tests/judging/ holds small problems (`NAME_problem.py`) and candidates for them (`NAME_*.py`, the
problem is the part of the name before the first underscore). Each candidate's first line says
what must happen: `# expect: correct` (accepted with no warning), `# expect: correct, WARNING`
(accepted with that warning), `# expect: verdict=V` (that verdict), `# expect: interpreter_limitation` (no verdict on the CPU
interpreter, never `incorrect`) or `# expect: RULE` (verdict `cheating` with that rule)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from triton_referee.worker.evaluate import evaluate
from triton_referee.worker.models import EvalConfig, EvaluationResult, Problem, RewardConfig, Submission, Verdict
from triton_referee.worker.static_checks import ProblemSourceError

HERE = Path(__file__).resolve().parents[1] / "judging"
CANDIDATES = sorted(p for p in HERE.glob("*.py") if not p.stem.endswith("_problem"))


def problem_for(path: Path) -> Problem:
    return Problem(source=(HERE / f"{path.stem.split('_')[0]}_problem.py").read_text())


def expectation(path: Path) -> tuple[str, str | None]:
    match = re.match(r"# expect: ([\w=]+)(?:, (\w+))?", path.read_text())
    assert match, f"{path.name} must start with '# expect: ...'"
    return match.group(1), match.group(2)


def judge(path: Path, pool: Any, **config: Any) -> EvaluationResult:
    return evaluate(
        problem_for(path),
        Submission(source=path.read_text()),
        EvalConfig(**{"device": "cpu", "trials": 2, "timeout_s": 90, **config}),
        pool=pool,
    )


@pytest.mark.parametrize("path", CANDIDATES, ids=lambda p: p.stem)
def test_candidate_gets_its_verdict(path: Path, warm_pool: Any) -> None:
    expected, warning = expectation(path)
    if expected == "problem_error":
        with pytest.raises(ProblemSourceError, match="degenerate problem"):
            judge(path, warm_pool)
        return
    result = judge(path, warm_pool)
    rules = [v.rule for v in result.anti_cheat.violations]
    warnings = [w.rule for w in result.anti_cheat.warnings]
    if expected == "interpreter_limitation":
        assert result.verdict == Verdict.infrastructure_error and result.error is not None, (result.verdict, result.feedback)
        assert result.error["kind"] == "interpreter_limitation" and result.error["dtypes"] == ["bfloat16"]
        assert result.reward == 0 and "interpreter" in result.feedback
        return
    if expected.startswith("verdict="):
        assert result.verdict.value == expected.removeprefix("verdict="), (result.verdict, rules, result.feedback)
        return
    if expected == "correct":
        assert result.verdict == Verdict.correct, (result.verdict, rules, result.feedback)
        assert warnings == ([warning] if warning else []), warnings
        return
    assert result.verdict == Verdict.cheating, (result.verdict, rules, result.feedback)
    assert expected in rules, rules


def test_epilogue_share_and_penalty_reach_the_result(warm_pool: Any) -> None:
    path = HERE / "sum_partials_epilogue.py"
    result = judge(path, warm_pool, reward=RewardConfig(torch_epilogue_penalty=0.25))
    [warning] = result.anti_cheat.warnings
    assert warning.rule == "torch_epilogue" and warning.evidence["ops"] == {"sum": 1}
    assert 0 < warning.evidence["torch_share"] < 0.05  # the partials are 8 floats against 16x250 read by the kernel
    assert result.reward == pytest.approx(0.75) and result.rewards.correctness == 1.0
    assert "torch_epilogue" in result.feedback


def test_epilogue_share_is_configurable(warm_pool: Any) -> None:
    """With no share allowed, the same epilogue is a fallback (the old strict rule)."""
    result = judge(HERE / "sum_partials_epilogue.py", warm_pool, torch_epilogue_max_share=0.0)
    assert result.verdict == Verdict.cheating
    assert [v.rule for v in result.anti_cheat.violations] == ["torch_fallback"]


def test_major_op_is_named(warm_pool: Any) -> None:
    result = judge(HERE / "linear_in_torch.py", warm_pool)
    [violation] = [v for v in result.anti_cheat.violations if v.rule == "torch_fallback"]
    assert violation.evidence["major_ops"] == ["addmm"]


def test_wide_reduction_in_another_order_passes_for_many_seeds(warm_pool: Any) -> None:
    """The fp32 reference of this cancelling row sum is itself ~0.05 from the exact sum (the bound at
    1e-4 is ~0.03): against it alone, an honest kernel summing in another order fails at random.
    Against the fp64 reference with the fp32 reference's own error allowed, it passes every seed.
    44 random draws (where the fp32-only comparison failed 3): four evaluations of 11 trials, each
    trial with inputs of its own seed (fewer evaluations, the same draws' worth of evidence)."""
    path = HERE / "wide_blocked_sum.py"
    reference_errors = []
    for seed in range(4):
        result = judge(path, warm_pool, seed=seed, trials=11)
        assert result.verdict == Verdict.correct, (seed, result.feedback)
        assert result.correctness.trials >= 11
        reference_errors.append(result.correctness.reference_error_vs_fp64)
    assert min(reference_errors) > 1e-4  # the fp32 reference is that far from exact on every seed
    assert result.correctness.max_abs_error_vs_fp64 is not None


def test_failed_elements_are_named(warm_pool: Any) -> None:
    result = judge(HERE / "wide_fp16_sum.py", warm_pool, seed=1, trials=1)
    failure = result.correctness.first_failure
    assert result.verdict == Verdict.incorrect and failure is not None
    assert failure["failed_elements"] and len(failure["failed_elements"]) <= 5
    worst = failure["failed_elements"][0]
    assert failure["worst_index"] == worst["index"] and worst["abs_error"] > 1e-4


def test_value_ranges_stay_in_the_declared_domain(warm_pool: Any) -> None:
    """log(x): every range is kept, the negative one clamped into INPUT_DOMAIN = (0.01, None)."""
    result = judge(HERE / "log_honest.py", warm_pool)
    assert result.verdict == Verdict.correct, result.feedback
    assert result.correctness.value_ranges == ["scaled", "shifted", "negative", "near_constant"]


def test_value_ranges_where_the_reference_is_not_finite_are_dropped(warm_pool: Any) -> None:
    """Without the declared domain, log of negative inputs is NaN in the reference: that range is dropped."""
    source = (HERE / "log_problem.py").read_text().replace("INPUT_DOMAIN = (0.01, None)", "")
    result = evaluate(
        Problem(source=source),
        Submission(source=(HERE / "log_honest.py").read_text()),
        EvalConfig(device="cpu", trials=2),
        pool=warm_pool,
    )
    assert result.verdict == Verdict.correct, result.feedback
    assert "negative" not in result.correctness.value_ranges and "scaled" in result.correctness.value_ranges


def test_problem_can_opt_out_of_random_parameters(warm_pool: Any) -> None:
    source = (HERE / "layernorm_problem.py").read_text() + "\nRANDOMIZE_PARAMETERS = False\n"
    result = evaluate(
        Problem(source=source),
        Submission(source=(HERE / "layernorm_ignores_parameters.py").read_text()),
        EvalConfig(device="cpu", trials=2),
        pool=warm_pool,
    )
    assert result.verdict == Verdict.correct, result.feedback  # weight 1 and bias 0: ignoring them is right here


def test_kernelbench_mode_uses_the_published_inputs_only(warm_pool: Any) -> None:
    """The KernelBench-compatible mode: the published inputs and parameters, no extra sets or ranges.
    Cheats that only hardening catches pass there; the default stays strict."""
    for name in ("layernorm_ignores_parameters.py", "softmax_no_max_subtraction.py"):
        path = HERE / name
        lenient = judge(path, warm_pool, mode="kernelbench")
        assert lenient.verdict == Verdict.correct, (name, lenient.feedback)
        assert lenient.correctness.input_sets == 1 and lenient.correctness.value_ranges == []
        assert judge(path, warm_pool).verdict == Verdict.incorrect


def test_kernelbench_mode_judges_a_degenerate_problem_with_a_warning(warm_pool: Any) -> None:
    result = judge(HERE / "constant_ones.py", warm_pool, mode="kernelbench")
    assert result.verdict == Verdict.correct
    assert [w.rule for w in result.anti_cheat.warnings] == ["degenerate_problem"]
