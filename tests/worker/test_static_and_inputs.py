"""Static checks, input-set planning and the reward presets: pure functions, no processes."""

from __future__ import annotations

import ast
import textwrap

import pytest

from triton_referee.worker.input_sets import plan_input_sets
from triton_referee.worker.models import RewardConfig, Verdict
from triton_referee.worker.reward import compute_reward
from triton_referee.worker.static_checks import ProblemSourceError, check_candidate, check_problem, jit_functions


def _src(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


# --- check_candidate -----------------------------------------------------------------------------


GOOD = _src(
    """
    import triton
    import triton.language as tl


    @triton.jit
    def kernel(x_ptr):
        pass


    class ModelNew:
        pass
    """
)


def test_good_candidate_passes():
    assert check_candidate(GOOD) is None


def test_syntax_error_is_a_compile_error_with_its_line():
    source = GOOD + "\n\ndef broken(x:\n    return x\n"
    failure = check_candidate(source)
    assert failure is not None
    assert failure.verdict == Verdict.compile_error
    bad_line = source.splitlines().index("def broken(x:") + 1
    assert failure.line == bad_line
    assert f"line {bad_line}" in failure.message


def test_missing_model_new_is_invalid():
    failure = check_candidate(GOOD.replace("class ModelNew", "class Model"))
    assert failure is not None and failure.verdict == Verdict.invalid_submission
    assert "ModelNew" in failure.message


def test_model_new_must_be_at_module_level():
    source = GOOD.replace("class ModelNew:\n    pass", "def factory():\n    class ModelNew:\n        pass\n    return ModelNew")
    failure = check_candidate(source)
    assert failure is not None and failure.verdict == Verdict.invalid_submission


def test_no_jit_kernel_is_invalid():
    failure = check_candidate(GOOD.replace("@triton.jit\n", ""))
    assert failure is not None and failure.verdict == Verdict.invalid_submission
    assert "triton.jit" in failure.message


def test_empty_and_nul_sources_are_invalid():
    for source in ("", "   \n\t\n"):
        failure = check_candidate(source)
        assert failure is not None and failure.verdict == Verdict.invalid_submission
    failure = check_candidate(GOOD + "\x00")
    assert failure is not None and failure.verdict == Verdict.invalid_submission


def test_autotune_over_jit_counts():
    source = GOOD.replace(
        "@triton.jit\n",
        "@triton.autotune(configs=[triton.Config({'BLOCK': 128})], key=['n'])\n@triton.jit\n",
    )
    assert check_candidate(source) is None
    assert jit_functions(ast.parse(source)) == ["kernel"]


def test_from_triton_import_jit_counts():
    source = GOOD.replace("import triton\n", "import triton\nfrom triton import jit\n").replace("@triton.jit", "@jit")
    assert "@jit\n" in source
    assert check_candidate(source) is None
    assert jit_functions(ast.parse(source)) == ["kernel"]


def test_jit_with_arguments_counts():
    source = GOOD.replace("@triton.jit", "@triton.jit(do_not_specialize=['x_ptr'])")
    assert check_candidate(source) is None


def test_unrelated_decorators_do_not_count():
    source = GOOD.replace("@triton.jit", "@staticmethod")
    failure = check_candidate(source)
    assert failure is not None and failure.verdict == Verdict.invalid_submission


# --- check_problem -------------------------------------------------------------------------------


PROBLEM = _src(
    """
    import torch
    import torch.nn as nn


    class Model(nn.Module):
        def __init__(self, scale):
            super().__init__()
            self.scale = scale

        def forward(self, x):
            return x * self.scale


    batch_size = 16
    dim = 16384
    features = 64


    def get_inputs():
        return [torch.randn(batch_size, dim, features)]


    def get_init_inputs():
        return [features]
    """
)


def test_good_problem_parses():
    tree = check_problem(PROBLEM)
    assert isinstance(tree, ast.Module)


@pytest.mark.parametrize(
    ("source", "phrase"),
    [
        ("", "empty"),
        ("\n  \n", "empty"),
        (PROBLEM.replace("def get_inputs", "def make_inputs"), "get_inputs"),
        (PROBLEM.replace("def get_init_inputs", "def init_inputs"), "get_init_inputs"),
        (PROBLEM.replace("class Model(", "class Reference("), "Model"),
        (PROBLEM + "\ndef broken(:\n", "not valid Python"),
        (PROBLEM + "\x00", "NUL"),
    ],
    ids=["empty", "blank", "no-get_inputs", "no-get_init_inputs", "no-Model", "syntax-error", "nul"],
)
def test_bad_problems_raise(source, phrase):
    with pytest.raises(ProblemSourceError, match=phrase):
        check_problem(source)


def test_problem_source_error_is_a_value_error():
    assert issubclass(ProblemSourceError, ValueError)


# --- input sets ----------------------------------------------------------------------------------


def test_derived_input_sets_override_only_get_inputs_constants():
    sets = plan_input_sets(ast.parse(PROBLEM))
    # `features` is read by get_init_inputs (the model is built once), so it is never overridden.
    assert sets == [{}, {"batch_size": 4, "dim": 4096}, {"batch_size": 9, "dim": 8193}]
    smaller, odd = sets[1], sets[2]
    assert all(smaller[k] == v // 4 for k, v in {"batch_size": 16, "dim": 16384}.items())
    assert all(value % 2 == 1 for value in odd.values())


def test_kernelbench_one_liner_constants():
    source = PROBLEM.replace("batch_size = 16\ndim = 16384\n", "batch_size = 16; dim = 16384\n")
    assert "batch_size = 16; dim = 16384" in source
    assert plan_input_sets(ast.parse(source)) == [{}, {"batch_size": 4, "dim": 4096}, {"batch_size": 9, "dim": 8193}]


def test_tiny_constants_booleans_and_unused_names_are_not_overridden():
    source = _src(
        """
        import torch
        n = 2
        flag = True
        unused = 4096
        size = 1000

        def get_inputs():
            return [torch.randn(n, size) if flag else None]

        def get_init_inputs():
            return []
        """
    )
    assert plan_input_sets(ast.parse(source)) == [{}, {"size": 250}, {"size": 501}]


def test_no_size_constants_gives_the_original_set_only():
    source = _src(
        """
        import torch

        def get_inputs():
            return [torch.randn(8, 8)]

        def get_init_inputs():
            return []
        """
    )
    assert plan_input_sets(ast.parse(source)) == [{}]


def test_declared_input_sets_are_used():
    source = PROBLEM + '\nINPUT_SETS = [{"batch_size": 3, "dim": 7}, {}, {"dim": 100}]\n'
    assert plan_input_sets(ast.parse(source)) == [{}, {"batch_size": 3, "dim": 7}, {"dim": 100}]


@pytest.mark.parametrize(
    "declaration",
    [
        'INPUT_SETS = {"dim": 7}',
        'INPUT_SETS = [{"dim": 7.5}]',
        'INPUT_SETS = [{"dim": "7"}]',
        "INPUT_SETS = [{1: 7}]",
        "INPUT_SETS = [make_sets()]",
        "INPUT_SETS = [[1, 2]]",
    ],
)
def test_malformed_input_sets_raise_value_error(declaration):
    with pytest.raises(ValueError, match="INPUT_SETS"):
        plan_input_sets(ast.parse(PROBLEM + "\n" + declaration + "\n"))


@pytest.mark.parametrize(
    "declaration",
    [
        "INPUT_SETS = [{[1]: 7}]",  # literal_eval raises TypeError: unhashable type: 'list'
        'INPUT_SETS = [{"dim": {1, [2]}}]',
    ],
    ids=["unhashable-key", "unhashable-set-item"],
)
def test_unhashable_literals_in_input_sets_raise_value_error(declaration):
    """evaluate() turns ValueError into ProblemSourceError (CLI exit 2); anything else escapes as a
    crash with a traceback."""
    with pytest.raises(ValueError, match="INPUT_SETS"):
        plan_input_sets(ast.parse(PROBLEM + "\n" + declaration + "\n"))


# --- rewards -------------------------------------------------------------------------------------


def _reward(preset: str, speedup: float | None, meaningful: bool = True, verdict: Verdict = Verdict.correct, **config):
    reward, parts = compute_reward(verdict, speedup, meaningful, RewardConfig(preset=preset, **config))
    return reward, parts.correctness, parts.speedup


def test_tritonrl_on_gpu_numbers():
    assert _reward("tritonrl", 2.0) == (2.0, 1.0, 2.0)
    assert _reward("tritonrl", 0.5) == (0.5, 1.0, 0.5)
    assert _reward("tritonrl", 10.0) == (10.0, 1.0, 10.0)


def test_fast_p_on_gpu_numbers():
    assert _reward("fast_p", 2.0) == (1.0, 1.0, 1.0)
    assert _reward("fast_p", 0.5) == (0.0, 1.0, 0.0)
    assert _reward("fast_p", 1.0) == (0.0, 1.0, 0.0), "fast_p needs a speedup strictly above p"
    assert _reward("fast_p", 1.5, fast_p_threshold=2.0) == (0.0, 1.0, 0.0)
    assert _reward("fast_p", 2.5, fast_p_threshold=2.0) == (1.0, 1.0, 1.0)


def test_drkernel_on_gpu_numbers_with_cap():
    assert _reward("drkernel", 2.0) == (3.0, 1.0, 2.0)
    assert _reward("drkernel", 0.5) == (1.5, 1.0, 0.5)
    assert _reward("drkernel", 10.0) == (4.0, 1.0, 3.0)  # capped at the default 3.0
    assert _reward("drkernel", 10.0, speedup_cap=5.0) == (6.0, 1.0, 5.0)


@pytest.mark.parametrize("preset", ["tritonrl", "fast_p", "drkernel"])
def test_cpu_numbers_count_correctness_only(preset):
    assert _reward(preset, None, meaningful=False) == (1.0, 1.0, 0.0)
    # even if some speed figure is present, it does not count when it is not meaningful
    assert _reward(preset, 7.0, meaningful=False) == (1.0, 1.0, 0.0)


@pytest.mark.parametrize("preset", ["tritonrl", "fast_p", "drkernel"])
def test_cheating_gets_the_penalty(preset):
    assert _reward(preset, 5.0, verdict=Verdict.cheating) == (-1.0, 0.0, 0.0)
    assert _reward(preset, 5.0, verdict=Verdict.cheating, cheat_penalty=-3.5) == (-3.5, 0.0, 0.0)


@pytest.mark.parametrize("preset", ["tritonrl", "fast_p", "drkernel"])
@pytest.mark.parametrize(
    "verdict",
    [v for v in Verdict if v not in (Verdict.correct, Verdict.cheating)],
)
def test_every_other_failure_gets_zero(preset, verdict):
    assert _reward(preset, 5.0, verdict=verdict) == (0.0, 0.0, 0.0)
