"""The trusted comparator. It runs only in the reference process, which never imports the candidate,
so nothing the candidate patches in its own process can change a comparison."""

from __future__ import annotations

import copy
from typing import Any

import torch

from .tensors import dtype_name

# Default tolerances by dtype (atol, rtol); a problem or a request may override them.
DEFAULT_TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-6, 1e-6),
    torch.float32: (1e-4, 1e-4),
    torch.float16: (1e-2, 1e-2),
    torch.bfloat16: (1e-2, 1e-2),
    torch.complex64: (1e-4, 1e-4),
    torch.complex128: (1e-6, 1e-6),
}


def flatten_outputs(value: Any) -> list[Any]:
    """A forward may return one tensor or a tuple/list of them; compare element by element."""
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def tolerance_for(dtype: torch.dtype, atol: float | None, rtol: float | None) -> tuple[float, float]:
    default_atol, default_rtol = DEFAULT_TOLERANCES.get(dtype, (0.0, 0.0))
    return (default_atol if atol is None else atol, default_rtol if rtol is None else rtol)


def compare_tensor(
    expected: torch.Tensor, actual: Any, atol: float | None, rtol: float | None, exact: Any = None
) -> dict[str, Any]:
    """Exact shape and dtype, no broadcasting, NaN/Inf positions must match, then allclose against
    the reference; an element outside that bound still passes when it is within the bound of the
    fp64 reference (`exact`, when the problem could run in fp64) plus an allowance of the fp32
    reference's own error (see `_against_exact`)."""
    report: dict[str, Any] = {"passed": False, "max_abs_error": None, "max_rel_error": None}
    if not isinstance(actual, torch.Tensor):
        report["reason"] = f"expected a tensor, got {type(actual).__name__}"
        return report
    if tuple(actual.shape) != tuple(expected.shape):
        report["reason"] = f"shape {list(actual.shape)} != expected {list(expected.shape)}"
        return report
    if actual.dtype != expected.dtype:
        report["reason"] = f"dtype {dtype_name(actual.dtype)} != expected {dtype_name(expected.dtype)}"
        return report
    use_atol, use_rtol = tolerance_for(expected.dtype, atol, rtol)
    report["atol"], report["rtol"] = use_atol, use_rtol
    actual = actual.to(expected.device)
    if expected.numel() == 0:
        report.update(passed=True, max_abs_error=0.0, max_rel_error=0.0)
        return report
    if not (expected.is_floating_point() or expected.is_complex()):
        mismatched = actual != expected
        count = int(mismatched.sum())
        report.update(
            passed=count == 0,
            mismatched=count,
            max_abs_error=float((actual.long() - expected.long()).abs().max()) if count else 0.0,
            max_rel_error=None,
        )
        if count:
            report["reason"] = (
                f"{count} of {expected.numel()} elements differ (exact match required for {dtype_name(expected.dtype)})"
            )
            report["worst_index"] = _unravel(int(mismatched.reshape(-1).nonzero()[0]), expected.shape)
        return report

    wide = torch.complex128 if expected.is_complex() else torch.float64
    exp64, act64 = expected.to(wide), actual.to(wide)
    exp_nan, act_nan = torch.isnan(exp64), torch.isnan(act64)
    if not torch.equal(exp_nan, act_nan):
        diff = int((exp_nan != act_nan).sum())
        report["reason"] = f"NaN positions differ at {diff} elements"
        report["worst_index"] = _unravel(int((exp_nan != act_nan).reshape(-1).nonzero()[0]), expected.shape)
        return report
    exp_inf, act_inf = torch.isinf(exp64), torch.isinf(act64)
    if not torch.equal(exp_inf, act_inf) or not torch.equal(exp64[exp_inf], act64[act_inf]):
        report["reason"] = "Inf positions or signs differ"
        return report
    finite = ~(exp_nan | exp_inf)
    zero = torch.zeros((), dtype=torch.float64, device=exp64.device)
    abs_err = torch.where(finite, (act64 - exp64).abs(), zero)
    bound = use_atol + use_rtol * exp64.abs()
    mismatched = finite & (abs_err > bound)
    rel_err = abs_err / exp64.abs().clamp_min(torch.finfo(torch.float64).tiny)
    rel_err = torch.where(finite & (exp64 != 0), rel_err, torch.zeros_like(rel_err))
    report.update(max_abs_error=float(abs_err.max()), max_rel_error=float(rel_err.max()))
    if exact is not None:  # reported whether or not it decides anything
        mismatched = _against_exact(report, exp64, act64, exact, finite, mismatched, use_atol, use_rtol)
    count = int(mismatched.sum())
    # The worst element is the worst one that failed (the worst overall can be within its bound).
    worst = (
        int(torch.where(mismatched, abs_err, torch.full_like(abs_err, -1.0)).reshape(-1).argmax())
        if count
        else int(abs_err.reshape(-1).argmax())
    )
    report.update(
        passed=count == 0,
        mismatched=count,
        worst_index=_unravel(worst, expected.shape),
        worst_expected=_scalar(exp64.reshape(-1)[worst]),
        worst_actual=_scalar(act64.reshape(-1)[worst]),
    )
    if count:
        report["failed_elements"] = _failed_elements(mismatched, exp64, act64, abs_err, expected.shape)
        report["reason"] = (
            f"{count} of {expected.numel()} elements ({100.0 * count / expected.numel():.3g}%) outside "
            f"atol={use_atol:g}, rtol={use_rtol:g}; max abs error of a failed element {float(abs_err.reshape(-1)[worst]):.3g}"
        )
    return report


# The fp64 comparison allows an element this many times the fp32 reference's own largest error
# (against fp64): an honest kernel that sums in another order errs about as much as torch does (on
# wide cancelling sums, blocked, strided and sequential fp32 orders stayed within 2.5x of it over 600 cases).
REFERENCE_ERROR_FACTOR = 4.0
# An fp32 reference further from its fp64 twin than this many tolerances is not an approximation of
# it (randomness in forward, an op that does not upcast): then only the fp32 comparison counts.
MAX_REFERENCE_ERROR_IN_TOLERANCES = 10.0


def _against_exact(
    report: dict[str, Any],
    exp64: torch.Tensor,
    act64: torch.Tensor,
    exact: Any,
    finite: torch.Tensor,
    mismatched: torch.Tensor,
    atol: float,
    rtol: float,
) -> torch.Tensor:
    """Elements outside the fp32 bound get a second chance against the fp64 reference, with an
    allowance of the fp32 reference's own error. Returns the elements that fail both."""
    if not isinstance(exact, torch.Tensor) or exact.shape != exp64.shape or exact.dtype != torch.float64:
        report["fp64"] = "unavailable"
        return mismatched
    exact = exact.to(exp64.device)
    usable = finite & torch.isfinite(exact)
    zero = torch.zeros((), dtype=torch.float64, device=exp64.device)
    reference_error = float(torch.where(usable, (exp64 - exact).abs(), zero).max())
    scale = atol + rtol * float(torch.where(usable, exact.abs(), zero).max())
    report["reference_error_vs_fp64"] = reference_error
    if reference_error > MAX_REFERENCE_ERROR_IN_TOLERANCES * scale:
        report["fp64"] = "disagrees with the fp32 reference; not used"
        return mismatched
    allowance = REFERENCE_ERROR_FACTOR * reference_error
    error_vs_exact = torch.where(usable, (act64 - exact).abs(), zero)
    report.update(fp64="used", fp64_allowance=allowance, max_abs_error_vs_fp64=float(error_vs_exact.max()))
    within = usable & (error_vs_exact <= atol + rtol * exact.abs() + allowance)
    return mismatched & ~within


def _failed_elements(
    mismatched: torch.Tensor, exp64: torch.Tensor, act64: torch.Tensor, abs_err: torch.Tensor, shape: torch.Size, limit: int = 5
) -> list[dict[str, Any]]:
    """The worst failed elements (index, expected, actual, abs error), worst first."""
    flat = torch.where(mismatched, abs_err, torch.full_like(abs_err, -1.0)).reshape(-1)
    count = min(limit, int(mismatched.sum()))
    indices = torch.topk(flat, count).indices.tolist() if count else []
    return [
        {
            "index": _unravel(i, shape),
            "expected": _scalar(exp64.reshape(-1)[i]),
            "actual": _scalar(act64.reshape(-1)[i]),
            "abs_error": float(abs_err.reshape(-1)[i]),
        }
        for i in indices
    ]


# Comparing widens to float64 with a few full-size temporaries (~10x the output's bytes): larger
# outputs are compared in slices of this many elements, so KernelBench-sized problems fit the device.
CHUNK_ELEMENTS = 1 << 26


def compare_large(
    expected: torch.Tensor, actual: Any, atol: float | None, rtol: float | None, exact: Any = None
) -> dict[str, Any]:
    """`compare_tensor`, slice by slice for a large floating-point output (one report: maxima over
    the slices, failures counted over all of them, the first failing slice's elements named by
    their index in the whole tensor)."""
    numel = expected.numel()
    if (
        numel <= CHUNK_ELEMENTS
        or not isinstance(actual, torch.Tensor)
        or tuple(actual.shape) != tuple(expected.shape)
        or actual.dtype != expected.dtype
        or not expected.is_floating_point()
    ):
        return compare_tensor(expected, actual, atol, rtol, exact)
    flat_expected, flat_actual = expected.reshape(-1), actual.to(expected.device).reshape(-1)
    flat_exact = exact.reshape(-1) if isinstance(exact, torch.Tensor) and exact.shape == expected.shape else None
    merged: dict[str, Any] = {"passed": True, "mismatched": 0, "max_abs_error": 0.0, "max_rel_error": 0.0}
    for start in range(0, numel, CHUNK_ELEMENTS):
        part = slice(start, start + CHUNK_ELEMENTS)
        report = compare_tensor(
            flat_expected[part], flat_actual[part], atol, rtol, flat_exact[part] if flat_exact is not None else None
        )
        for key in ("max_abs_error", "max_rel_error", "reference_max_abs_error", "candidate_max_abs_error_vs_fp64"):
            if report.get(key) is not None:
                merged[key] = max(merged.get(key) or 0.0, report[key])
        merged.update({k: report[k] for k in ("atol", "rtol") if k in report})
        merged["mismatched"] += int(report.get("mismatched") or 0)
        if not report["passed"] and merged["passed"]:  # the first failing slice tells where
            merged["passed"] = False
            for key in ("worst_expected", "worst_actual", "reason"):
                if key in report:
                    merged[key] = report[key]
            if "worst_index" in report:
                merged["worst_index"] = _unravel(start + report["worst_index"][0], expected.shape)
            merged["failed_elements"] = [
                {**element, "index": _unravel(start + element["index"][0], expected.shape)}
                for element in report.get("failed_elements", [])
            ]
            if "mismatched" not in report:  # a NaN/Inf or shape problem: nothing more to add up
                return merged
    if not merged["passed"] and merged["mismatched"]:
        merged["reason"] = (
            f"{merged['mismatched']} of {numel} elements ({100.0 * merged['mismatched'] / numel:.3g}%) outside "
            f"atol={merged.get('atol')}, rtol={merged.get('rtol')}"
        )
    return merged


def compare_outputs(expected: Any, actual: Any, atol: float | None, rtol: float | None, exact: Any = None) -> dict[str, Any]:
    expected_list, actual_list = flatten_outputs(expected), flatten_outputs(actual)
    exact_list = flatten_outputs(exact) if exact is not None else []
    if len(exact_list) != len(expected_list):
        exact_list = [None] * len(expected_list)
    if len(expected_list) != len(actual_list) or isinstance(expected, (list, tuple)) != isinstance(actual, (list, tuple)):
        return {"passed": False, "reason": f"returned {_describe(actual)}, expected {_describe(expected)}", "outputs": []}
    reports = []
    for index, (exp, act) in enumerate(zip(expected_list, actual_list, strict=True)):
        if isinstance(exp, torch.Tensor):
            item = compare_large(exp, act, atol, rtol, exact_list[index])
        else:
            item = {"passed": exp == act, "max_abs_error": None, "max_rel_error": None}
            if not item["passed"]:
                item["reason"] = f"non-tensor output {act!r} != expected {exp!r}"
        item["index"] = index
        reports.append(item)
    failed = [r for r in reports if not r["passed"]]
    summary: dict[str, Any] = {"passed": not failed, "outputs": reports}
    if failed:
        prefix = f"output {failed[0]['index']}: " if len(reports) > 1 else ""
        summary["reason"] = prefix + failed[0].get("reason", "mismatch")
    return summary


def inputs_unchanged(
    pristine: list[Any],
    returned: Any,
    mutated: dict[int, torch.Tensor] | None = None,
    atol: float | None = None,
    rtol: float | None = None,
) -> dict[str, Any]:
    """Inputs must come back bit-identical (compared as raw bytes, so NaN == NaN), except those the
    reference itself changes in place (`mutated`: index -> the reference's input after its call):
    those may come back unchanged or as the reference left them (compared like an output)."""
    mutated = mutated or {}
    returned_list = flatten_outputs(returned)
    changed = []
    for index, (before, after) in enumerate(zip(pristine, returned_list, strict=False)):
        if isinstance(before, torch.Tensor):
            same = (
                isinstance(after, torch.Tensor)
                and before.shape == after.shape
                and before.dtype == after.dtype
                and torch.equal(_bits(before), _bits(after.to(before.device)))
            )
            if not same and index in mutated:
                same = bool(compare_tensor(mutated[index], after, atol, rtol)["passed"])
        else:
            same = before == after
        if not same:
            changed.append(index)
    return {"unchanged": not changed and len(returned_list) == len(pristine), "changed_inputs": changed}


def run_reference(model: Any, inputs: list[Any]) -> tuple[Any, dict[int, torch.Tensor], list[int]]:
    """The reference's outputs on copies of `inputs`, the inputs it changed in place (index -> their
    state after the call) and the inputs an output shares memory with (`nn.ReLU(inplace=True)`)."""
    copies = [x.clone() if isinstance(x, torch.Tensor) else x for x in inputs]
    with torch.no_grad():
        outputs = model(*copies)
    mutated = {
        index: copy
        for index, (original, copy) in enumerate(zip(inputs, copies, strict=True))
        if isinstance(original, torch.Tensor) and not torch.equal(_bits(original), _bits(copy))
    }
    storages = {
        t.untyped_storage().data_ptr()
        for t in flatten_outputs(outputs)
        if isinstance(t, torch.Tensor) and t.layout == torch.strided and t.untyped_storage().nbytes()
    }
    aliased = [
        index
        for index, copy in enumerate(copies)
        if isinstance(copy, torch.Tensor) and copy.untyped_storage().nbytes() and copy.untyped_storage().data_ptr() in storages
    ]
    return outputs, mutated, aliased


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    flat = tensor.contiguous().reshape(-1)
    return flat.view(torch.uint8) if flat.numel() else flat


def _unravel(flat_index: int, shape: torch.Size) -> list[int]:
    index = []
    for dim in reversed(list(shape)):
        index.append(flat_index % dim)
        flat_index //= dim
    return list(reversed(index))


def _scalar(value: torch.Tensor) -> Any:
    item = value.item()
    return repr(item) if isinstance(item, complex) else item


def _describe(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)}"
    return "one tensor" if isinstance(value, torch.Tensor) else type(value).__name__


EXACT_MAX_ELEMENTS = 1 << 28  # inputs and outputs together; beyond it the fp64 comparison is skipped


def exact_model(model: Any) -> Any:
    """A float64 copy of the reference model for the fp64 comparison, or None (not a module, or it
    cannot be copied)."""
    if not isinstance(model, torch.nn.Module):
        return None
    try:
        return copy.deepcopy(model).double()
    except Exception:  # a module that cannot be copied: the fp32 comparison alone
        return None


def exact_outputs(model64: Any, inputs: list[Any], expected: Any) -> Any:
    """The reference's outputs in float64, on its inputs upcast, when every output is a floating
    point tensor and the model runs in float64; else None."""
    if model64 is None or not all(isinstance(t, torch.Tensor) and t.is_floating_point() for t in flatten_outputs(expected)):
        return None
    if sum(t.numel() for t in [*flatten_outputs(expected), *inputs] if isinstance(t, torch.Tensor)) > EXACT_MAX_ELEMENTS:
        return None  # KernelBench-sized: a float64 model run would double the device memory; fp32 alone
    upcast = [x.double() if isinstance(x, torch.Tensor) and x.is_floating_point() else x for x in inputs]
    try:
        outputs, _, _ = run_reference(model64, upcast)
    except Exception:  # an op without float64 support: the fp32 comparison alone
        return None
    return outputs


EXACT_MARKER = "referee:with-fp64"


def pack_expected(expected: Any, exact: Any) -> Any:
    """Expected outputs and their fp64 twin as one value (for the reference-data cache)."""
    return expected if exact is None else (EXACT_MARKER, expected, exact)


def unpack_expected(value: Any) -> tuple[Any, Any]:
    if isinstance(value, tuple) and len(value) == 3 and value[0] == EXACT_MARKER:
        return value[1], value[2]
    return value, None
