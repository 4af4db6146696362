"""The reference role: trusted. Loads the problem, makes every input, computes the expected
outputs, compares what the candidate returned, and times the reference. It never sees the
candidate's code, only the bytes of its outputs.

As a judge (`setup` with `judge: true`, when the engine holds this problem's reference data in its
cache) it loads no problem at all: it prepares its device, and `compare` receives the expected
outputs and the pristine inputs from the engine along with the candidate's bytes."""

from __future__ import annotations

from typing import Any

import torch

from . import compare, hardening, tensors
from .runtime import environment, load_module, prepare_device, resolve_device, write_source
from .timing import CudaTimer, time_on_host

REQUIRED = ("Model", "get_inputs", "get_init_inputs")


class ProblemError(Exception):
    """The reference file does not define a usable problem."""


class ReferenceRole:
    keep_file: str | None = None

    def __init__(self) -> None:
        self.module: Any = None
        self.model: Any = None
        self.device = torch.device("cpu")
        self.input_sets: list[dict[str, int]] = [{}]
        self.trials: dict[str, tuple[list[Any], Any]] = {}
        self.timing_inputs: list[list[Any]] = []
        # Inputs the reference changes in place (index -> state after its call), per trial and for the last call.
        self.mutated: dict[str, dict[int, torch.Tensor]] = {}
        self.last_mutated: dict[int, torch.Tensor] = {}
        self.aliased_inputs: list[int] = []
        self.model64: Any = None  # the model in float64, for the fp64 comparison
        self.exact: dict[str, Any] = {}  # per trial: the fp64 reference's outputs (or None)
        self.input_domain: Any = None  # the problem's INPUT_DOMAIN (clamps the value ranges)

    def cmd_setup(self, header: dict[str, Any], payload: bytearray) -> tuple[dict[str, Any], bytes]:
        self.device = resolve_device(header["device"])
        if header.get("judge"):  # no module, no model: the engine supplies what a comparison needs
            prepare_device(header["device"])
            return {"ok": True, "environment": environment(self.device)}, b""
        self.keep_file = write_source(header)
        try:
            self.module = load_module(self.keep_file, "referee_problem")
        except Exception as exc:
            raise ProblemError(f"the reference module failed to import: {type(exc).__name__}: {exc}") from exc
        missing = [name for name in REQUIRED if not hasattr(self.module, name)]
        if missing:
            raise ProblemError(f"the reference module does not define {', '.join(missing)}")
        self.input_sets = header.get("input_sets") or [{}]
        strict = header.get("mode", "strict") == "strict"
        randomize = strict and bool(getattr(self.module, "RANDOMIZE_PARAMETERS", True))
        self.input_domain = getattr(self.module, "INPUT_DOMAIN", None)
        tolerance = (header.get("atol", getattr(self.module, "ATOL", None)), header.get("rtol", getattr(self.module, "RTOL", None)))
        value_ranges: list[str] = []
        try:
            init_inputs = list(self.module.get_init_inputs())
            torch.manual_seed(int(header["init_seed"]))
            with torch.device(self.device):
                self.model = self.module.Model(*init_inputs)
            if isinstance(self.model, torch.nn.Module):
                self.model = self.model.to(self.device)
            if randomize:  # the candidate's model gets the same draw (hardening.py)
                hardening.randomize_parameters(self.model, int(header["init_seed"]))
            self.model64 = compare.exact_model(self.model)
            if header.get("checked"):  # built again for a cached problem: its sets and warnings are known
                valid_sets, warnings = list(range(len(self.input_sets))), []
                description, data = None, b""
                # One forward and comparison now, in the background: the first use of their kernels
                # (lazily loaded) would otherwise fall on the judged trials.
                warm = self.forward(self.make_inputs(0, int(header["init_seed"])))
                compare.compare_outputs(warm, warm, None, None)
            else:
                valid_sets = self._valid_sets(int(header["init_seed"]))
                if strict:
                    value_ranges = self._valid_value_ranges(int(header["init_seed"]), *tolerance, header.get("value_ranges"))
                warnings = self._check_not_degenerate(int(header["init_seed"]), value_ranges, *tolerance, refuse=strict)
                description, data = tensors.encode(init_inputs)
        except ProblemError:
            raise
        except Exception as exc:
            raise ProblemError(f"the reference problem failed to run: {type(exc).__name__}: {exc}") from exc
        reply = {
            "ok": True,
            "environment": environment(self.device),
            "init_inputs": description,
            "atol": getattr(self.module, "ATOL", None),
            "rtol": getattr(self.module, "RTOL", None),
            "allowed_ops": [str(op) for op in getattr(self.module, "ALLOWED_OPS", [])],
            "warnings": warnings,
            "valid_sets": valid_sets,
            "randomize_parameters": randomize,
            "value_ranges": value_ranges,
            "mutates_inputs": sorted(self.last_mutated),  # from the last forward of the setup
            "aliases_inputs": self.aliased_inputs,
        }
        return reply, data

    def make_inputs(self, set_index: int, seed: int, values: str | None = None) -> list[Any]:
        overrides = self.input_sets[set_index]
        saved = {name: getattr(self.module, name) for name in overrides}
        try:
            for name, value in overrides.items():
                setattr(self.module, name, value)
            torch.manual_seed(seed)
            with torch.device(self.device):
                inputs = list(self.module.get_inputs())
        finally:
            for name, value in saved.items():
                setattr(self.module, name, value)
        inputs = [x.to(self.device) if isinstance(x, torch.Tensor) else x for x in inputs]
        return hardening.apply_value_range(inputs, values, self.input_domain) if values else inputs

    def forward(self, inputs: list[Any]) -> Any:
        outputs, self.last_mutated, aliased = compare.run_reference(self.model, inputs)
        self.aliased_inputs = sorted({*self.aliased_inputs, *aliased})
        return outputs

    def _valid_sets(self, seed: int) -> list[int]:
        """Derived input sets the reference itself cannot run (e.g. a size that must divide another)
        are dropped; the original set must work."""
        valid = []
        for index in range(len(self.input_sets)):
            try:
                self.forward(self.make_inputs(index, seed))
                valid.append(index)
            except Exception:
                if index == 0:
                    raise
        self.input_sets = [self.input_sets[i] for i in valid]
        return valid

    def _valid_value_ranges(self, seed: int, atol: float | None, rtol: float | None,
                            requested: list[str] | None = None) -> list[str]:
        """The value ranges (hardening.VALUE_RANGES, or the problem's VALUE_RANGES) in which the
        reference stays finite and its fp32 result agrees with its fp64 one at the problem's tolerance
        (so the range can judge); on the original input set."""
        names = getattr(self.module, "VALUE_RANGES", None)
        names = list(hardening.VALUE_RANGES) if names is None else [n for n in names if n in hardening.VALUE_RANGES]
        if requested is not None:  # the request's choice, within the problem's
            names = [n for n in names if n in requested]
        valid = []
        for name in names:
            try:
                inputs = self.make_inputs(0, seed + 7, name)
                outputs = self.forward(inputs)
                exact = compare.exact_outputs(self.model64, inputs, outputs)
            except Exception:
                continue
            if not hardening.all_finite(outputs):
                continue
            if exact is not None:
                rounded = type(exact)(t.to(o.dtype) for t, o in zip(exact, outputs, strict=True)) \
                    if isinstance(exact, (list, tuple)) else exact.to(outputs.dtype)
                if not compare.compare_outputs(outputs, rounded, atol, rtol)["passed"]:
                    continue
            valid.append(name)
        return valid

    def _check_not_degenerate(self, seed: int, value_ranges: list[str], atol: float | None, rtol: float | None,
                              refuse: bool = True) -> list[dict[str, Any]]:
        """A problem whose output is the same, at its own tolerance, for three draws and every value
        range cannot tell a kernel from a constant: it is refused (ProblemError). In the
        KernelBench-compatible mode (`refuse` False) it is judged, with the degenerate_problem warning."""
        outputs = [self.forward(self.make_inputs(0, seed + k)) for k in (1, 2, 3)]
        outputs += [self.forward(self.make_inputs(0, seed + 1, name)) for name in value_ranges]
        evidence = hardening.degenerate(outputs, atol, rtol)
        if evidence is None or getattr(self.module, "ALLOW_DEGENERATE", False):
            return []
        if not refuse:
            return [{"rule": "degenerate_problem", "severity": "warning", "evidence": evidence,
                     "message": "the reference output is the same for different inputs at the problem's tolerance; "
                                "a candidate that ignores its inputs could pass"}]
        raise ProblemError(
                f"degenerate problem: the reference output is the same at the problem's tolerance for {evidence['draws']} "
                f"different inputs (largest difference {evidence['max_abs_difference']:.3g}), so it cannot tell a kernel "
                "from a constant; change get_inputs (or set ALLOW_DEGENERATE = True to judge it anyway)")

    def cmd_inputs(self, header: dict[str, Any], payload: bytearray) -> tuple[dict[str, Any], bytes]:
        """A trial's inputs. With `expected_budget` (bytes), the expected outputs come too, after the
        inputs' bytes (`inputs_nbytes`), or `expected: null` when they exceed the budget or cannot
        be encoded: the engine keeps them in its reference-data cache."""
        inputs = self.make_inputs(int(header["set_index"]), int(header["seed"]), header.get("values"))
        expected = self.forward(inputs)
        self.trials[header["trial"]] = (inputs, expected)
        self.mutated[header["trial"]] = self.last_mutated
        self.exact[header["trial"]] = compare.exact_outputs(self.model64, inputs, expected)
        description, data = tensors.encode(inputs)
        shapes = [list(x.shape) for x in inputs if isinstance(x, torch.Tensor)]
        reply = {"ok": True, "inputs": description, "shapes": shapes}
        if header.get("expected_budget") is not None:
            packed = compare.pack_expected(expected, self.exact[header["trial"]])
            reply["expected"], expected_data = _encode_within(packed, int(header["expected_budget"]) - len(data))
            reply["inputs_nbytes"] = len(data)
            data += expected_data
        return reply, data

    def _supplied(self, header: dict[str, Any], payload: bytearray) -> tuple[Any, Any, bytearray]:
        """A judge's comparison material: the payload is the candidate's bytes (`candidate_nbytes`),
        then the expected outputs' (`expected_nbytes`), then the pristine inputs'. Each description
        is decoded against its own segment only, so the candidate's cannot reach the trusted bytes."""
        start, middle = int(header["candidate_nbytes"]), int(header["candidate_nbytes"]) + int(header["expected_nbytes"])
        expected = tensors.decode(header["expected"], payload[start:middle], self.device)
        pristine = tensors.decode(header["pristine"], payload[middle:], self.device)
        return pristine, expected, payload[:start]

    def cmd_compare(self, header: dict[str, Any], payload: bytearray) -> tuple[dict[str, Any], bytes]:
        if "expected" in header:
            pristine, expected, payload = self._supplied(header, payload)
            expected, exact = compare.unpack_expected(expected)
        else:
            pristine, expected = self.trials.pop(header["trial"])
            exact = self.exact.pop(header["trial"], None)
        try:
            returned = tensors.decode(header["returned"], payload, self.device)
            actual = None if header.get("outputs") is None else tensors.decode(header["outputs"], payload, self.device)
        except tensors.EncodeError as exc:  # bytes that do not describe tensors: the candidate's doing
            report: dict[str, Any] = {"passed": False, "undecodable": str(exc), "outputs": [],
                                      "reason": "the candidate process sent outputs that cannot be decoded",
                                      "inputs": {"unchanged": True, "changed_inputs": []}}
            return {"ok": True, "report": report}, b""
        if actual is None:  # the candidate's outputs could not be transferred
            report = {"passed": False, "reason": "outputs are not plain dense tensors", "outputs": []}
        else:
            report = compare.compare_outputs(expected, actual, header.get("atol"), header.get("rtol"), exact)
        report["inputs"] = compare.inputs_unchanged(pristine, returned, self.mutated.pop(header["trial"], None),
                                                    header.get("atol"), header.get("rtol"))
        return {"ok": True, "report": report}, b""

    def cmd_timing_inputs(self, header: dict[str, Any], payload: bytearray) -> tuple[dict[str, Any], bytes]:
        self.timing_inputs = [self.make_inputs(0, int(seed)) for seed in header["seeds"]]
        description, data = tensors.encode(self.timing_inputs)
        return {"ok": True, "inputs": description}, data

    def cmd_time(self, header: dict[str, Any], payload: bytearray) -> tuple[dict[str, Any], bytes]:
        with torch.no_grad():  # entered once around the loop, as on the candidate's side
            if self.device.type == "cuda":
                stats = CudaTimer(self.device).run(lambda inputs: self.model(*inputs), self.timing_inputs, **header.get("options", {}))
            else:
                stats = time_on_host(lambda inputs: self.model(*inputs), self.timing_inputs)
        return {"ok": True, "stats": stats}, b""


def _encode_within(value: Any, budget: int) -> tuple[Any, bytes]:
    """Encode expected outputs if they fit in `budget` bytes (sized before copying them off the device)."""
    size = sum(x.numel() * x.element_size() for x in compare.flatten_outputs(value) if isinstance(x, torch.Tensor))
    if size > budget:
        return None, b""
    try:
        description, data = tensors.encode(value)
    except tensors.EncodeError:
        return None, b""
    return (description, data) if len(data) <= budget else (None, b"")
