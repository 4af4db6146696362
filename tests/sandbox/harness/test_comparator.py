"""The trusted comparator (sandbox/harness/compare.py), in-process, plus one end-to-end check that a
candidate cannot influence the comparison by patching torch in its own process."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch

# The harness is started as the top-level package `harness`, but it is also importable from the
# engine package; its modules import only torch and each other.
from triton_referee.sandbox.harness import compare
from triton_referee.worker.models import Verdict


def _passes(expected, actual, atol=None, rtol=None) -> bool:
    return bool(compare.compare_outputs(expected, actual, atol, rtol)["passed"])


# --- shape, dtype, type --------------------------------------------------------------------------


def test_identical_tensors_pass_with_zero_error():
    x = torch.randn(8, 8)
    report = compare.compare_outputs(x, x.clone(), None, None)
    assert report["passed"] is True
    assert report["outputs"][0]["max_abs_error"] == 0.0
    assert report["outputs"][0]["atol"] == pytest.approx(1e-4)


def test_shape_mismatch_fails():
    report = compare.compare_outputs(torch.zeros(4, 4), torch.zeros(4, 5), None, None)
    assert report["passed"] is False
    assert "shape" in report["reason"]


def test_no_broadcasting():
    expected = torch.ones(4, 4)
    report = compare.compare_outputs(expected, torch.ones(4, 1), None, None)
    assert report["passed"] is False and "shape" in report["reason"]
    assert not _passes(torch.ones(4), torch.ones(1, 4))
    assert not _passes(torch.ones(4, 1), torch.ones(4, 4))


def test_transposed_shape_fails():
    x = torch.randn(3, 5)
    assert not _passes(x, x.t().contiguous())


def test_dtype_mismatch_fails():
    x = torch.randn(16)
    report = compare.compare_outputs(x, x.double(), None, None)
    assert report["passed"] is False and "dtype" in report["reason"]
    assert not _passes(x.half(), x.float())
    assert not _passes(torch.arange(4), torch.arange(4, dtype=torch.int32))


def test_non_tensor_output_fails():
    assert not _passes(torch.zeros(3), [0.0, 0.0, 0.0])
    assert not _passes(torch.zeros(()), 0.0)
    assert not _passes(torch.zeros(3), None)


# --- NaN and Inf ---------------------------------------------------------------------------------


def test_nan_at_the_same_positions_passes():
    expected = torch.tensor([1.0, math.nan, 3.0])
    assert _passes(expected, torch.tensor([1.0, math.nan, 3.0]))


def test_nan_against_a_number_fails_both_ways():
    with_nan, without = torch.tensor([1.0, math.nan, 3.0]), torch.tensor([1.0, 2.0, 3.0])
    report = compare.compare_outputs(with_nan, without, None, None)
    assert report["passed"] is False and "NaN" in report["reason"]
    assert not _passes(without, with_nan)


def test_all_nan_output_does_not_pass_for_finite_expected():
    expected = torch.randn(32)
    assert not _passes(expected, torch.full_like(expected, math.nan))


def test_inf_sign_must_match():
    inf = math.inf
    assert _passes(torch.tensor([inf, -inf, 0.5]), torch.tensor([inf, -inf, 0.5]))
    report = compare.compare_outputs(torch.tensor([inf, 0.5]), torch.tensor([-inf, 0.5]), None, None)
    assert report["passed"] is False and "Inf" in report["reason"]
    assert not _passes(torch.tensor([inf, 0.5]), torch.tensor([1e30, 0.5]))
    assert not _passes(torch.tensor([1e30, 0.5]), torch.tensor([inf, 0.5]))


# --- tolerances ----------------------------------------------------------------------------------


def test_fp32_default_tolerance_is_1e_4():
    expected = torch.zeros(4)
    assert _passes(expected, expected + 0.9e-4)
    report = compare.compare_outputs(expected, expected + 2e-4, None, None)
    assert report["passed"] is False
    assert report["outputs"][0]["max_abs_error"] == pytest.approx(2e-4, rel=1e-3)
    assert "atol=0.0001" in report["reason"]
    # relative part: |err| <= atol + rtol * |expected|
    big = torch.full((4,), 100.0)
    assert _passes(big, big * (1 + 0.5e-4))
    assert not _passes(big, big * (1 + 5e-4))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_default_tolerance_is_1e_2(dtype):
    assert compare.tolerance_for(dtype, None, None) == (1e-2, 1e-2)
    expected = torch.zeros(4, dtype=dtype)
    assert _passes(expected, torch.full((4,), 0.005, dtype=dtype))
    assert not _passes(expected, torch.full((4,), 0.05, dtype=dtype))


def test_tolerance_overrides():
    expected = torch.zeros(4)
    off = expected + 0.05
    assert not _passes(expected, off)
    assert _passes(expected, off, atol=0.1, rtol=0.0)
    assert not _passes(expected, off, atol=0.01, rtol=0.0)
    # an explicit zero is an override too, not "use the default"
    assert not _passes(expected, expected + 1e-6, atol=0.0, rtol=0.0)
    assert compare.tolerance_for(torch.float32, 0.0, None) == (0.0, 1e-4)
    report = compare.compare_outputs(expected, off, 0.1, 0.2)
    assert (report["outputs"][0]["atol"], report["outputs"][0]["rtol"]) == (0.1, 0.2)


def test_integer_outputs_need_an_exact_match():
    expected = torch.arange(10)
    assert _passes(expected, expected.clone())
    changed = expected.clone()
    changed[7] += 1
    report = compare.compare_outputs(expected, changed, 10.0, 10.0)  # tolerances do not apply to integers
    assert report["passed"] is False
    assert report["outputs"][0]["worst_index"] == [7]
    assert not _passes(torch.tensor([True, False]), torch.tensor([True, True]))


# --- tuples --------------------------------------------------------------------------------------


def test_tuple_outputs():
    a, b = torch.randn(3), torch.randn(2)
    assert _passes((a, b), (a.clone(), b.clone()))
    assert not _passes((a, b), (a.clone(),))
    assert not _passes((a,), (a.clone(), b.clone()))
    assert not _passes((a, b), (b.clone(), a.clone()))
    assert not _passes(a, (a.clone(),)), "one tensor is not a tuple of one tensor"
    report = compare.compare_outputs((a, b), (a.clone(), b + 1), None, None)
    assert report["passed"] is False and report["reason"].startswith("output 1")


# --- inputs_unchanged ----------------------------------------------------------------------------


def test_inputs_unchanged_accepts_identical_bits():
    inputs = [torch.randn(5), 3, torch.arange(4)]
    report = compare.inputs_unchanged(inputs, [inputs[0].clone(), 3, inputs[2].clone()])
    assert report == {"unchanged": True, "changed_inputs": []}


def test_inputs_unchanged_detects_one_flipped_bit():
    x = torch.randn(64)
    flipped = x.clone()
    flipped.view(torch.int32)[17] ^= 1  # lowest mantissa bit: far below any tolerance
    assert torch.allclose(x, flipped)
    report = compare.inputs_unchanged([torch.zeros(2), x], [torch.zeros(2), flipped])
    assert report["unchanged"] is False
    assert report["changed_inputs"] == [1]


def test_inputs_unchanged_is_bitwise_for_nan_and_signed_zero():
    x = torch.tensor([math.nan, 1.0, 0.0])
    assert compare.inputs_unchanged([x], [x.clone()])["unchanged"] is True
    negative_zero = torch.tensor([math.nan, 1.0, -0.0])
    assert compare.inputs_unchanged([x], [negative_zero])["unchanged"] is False


def test_inputs_unchanged_rejects_missing_or_reshaped_inputs():
    x = torch.randn(4, 4)
    assert compare.inputs_unchanged([x, x], [x.clone()])["unchanged"] is False
    assert compare.inputs_unchanged([x], [x.clone().reshape(16)])["unchanged"] is False
    assert compare.inputs_unchanged([x], [x.double()])["unchanged"] is False


# --- the comparison happens where the candidate cannot reach -------------------------------------


PATCHING_CANDIDATE_BODY = """
@triton.jit
def off_by_one_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    tl.store(out_ptr + offs, tl.where(x > 0, x, 0.0) + 1.0, mask=mask)


_always = lambda *args, **kwargs: True
torch.allclose = _always
torch.equal = _always
torch.Tensor.__eq__ = _always
torch.Tensor.__ne__ = lambda *args, **kwargs: False
torch.testing.assert_close = lambda *args, **kwargs: None
torch.isclose = lambda a, b, *args, **kwargs: torch.ones_like(a, dtype=torch.bool)
"""


def test_patching_torch_comparisons_in_the_candidate_changes_nothing(tiny_reference, make_tiny_candidate, evaluate_source):
    candidate = make_tiny_candidate(
        """
        x = x.contiguous()
        out = torch.empty_like(x)
        off_by_one_kernel[(triton.cdiv(x.numel(), 1024),)](x, out, x.numel(), BLOCK=1024)
        return out  # the kernel's own output, and wrong by 1 everywhere
        """,
        prelude=PATCHING_CANDIDATE_BODY,
    )
    result = evaluate_source(tiny_reference, candidate)
    # incorrect; or cheating where the engine also notices the patching (rule `tampering`)
    assert result.verdict in (Verdict.incorrect, Verdict.cheating), (result.verdict, result.feedback)
    assert {v.rule for v in result.anti_cheat.violations} <= {"tampering"}
    assert result.correct is False
    assert result.correctness.passed == 0
    assert result.correctness.first_failure is not None
    assert result.correctness.max_abs_error == pytest.approx(1.0, abs=1e-6)
    assert result.reward <= 0.0


def test_candidate_role_does_not_import_the_comparator():
    """The comparator runs only in the reference process; the candidate role must not load it."""
    source = Path(compare.__file__).with_name("candidate.py").read_text()
    imported = {alias.name for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert "compare" not in imported
