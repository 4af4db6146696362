"""The reference role: trusted. Loads the problem, makes every input, computes the expected
outputs, compares what the candidate returned, and times the reference. It never sees the
candidate's code, only its outputs.

No tensor crosses a pipe: inputs are made here in shared memory (a memfd on the CPU, an allocation
of their own shared by CUDA IPC on the GPU), and the candidate's outputs are read where the
candidate left them (see tensors.py, the data plane).

As a judge (`judge` instead of `setup`, when the engine holds this problem's reference data in its
cache) it loads no problem at all: it prepares its device, and `inputs` receives the cached inputs
and expected outputs from the engine (sealed memfds), shares the inputs and compares as a reference does."""

from __future__ import annotations

from typing import Any

import torch

from . import compare, hardening, tensors
from .messages import (
    CallCheck,
    CheckRound,
    CheckRoundReply,
    Compare,
    CompareReply,
    ComparisonReport,
    Done,
    JudgeSetup,
    JudgeSetupReply,
    ReferenceSetup,
    ReferenceSetupReply,
    Refresh,
    TimeReference,
    TimeReply,
    TimingInputs,
    TimingInputsReply,
    TrialInputs,
    TrialInputsReply,
    TrialRecord,
    TrialSizes,
    decode,
)
from .runtime import environment, load_module, prepare_device, resolve_device, write_source
from .timing import CudaTimer, time_on_host

REQUIRED = ("Model", "get_inputs", "get_init_inputs")
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _cast(value: Any, dtype: torch.dtype) -> Any:
    """A floating-point tensor in DTYPE (KernelBench's precision switch); anything else as it is."""
    return value.to(dtype) if isinstance(value, torch.Tensor) and value.is_floating_point() and dtype != torch.float32 else value


class ProblemError(Exception):
    """The reference file does not define a usable problem."""


class ReferenceRole:
    keep_file: str | None = None

    def __init__(self) -> None:
        self.module: Any = None
        self.model: Any = None
        self.device = torch.device("cpu")
        self.input_sets: list[dict[str, int]] = [{}]
        self.trials: dict[str, tuple[list[Any], tensors.SharedValue, Any]] = {}
        self.timing_inputs: list[list[Any]] = []
        self.dtype = torch.float32
        self.compiled: Any = None
        self.timing_shared: list[tensors.SharedValue] = []
        self.round_pristine: list[list[Any]] = []
        self.round_expected: list[Any] = []
        self.round_exact: list[Any] = []
        self.round_mutated: list[dict[int, torch.Tensor]] = []
        # Inputs the reference changes in place (index -> state after its call), per trial and for the last call.
        self.mutated: dict[str, dict[int, torch.Tensor]] = {}
        self.last_mutated: dict[int, torch.Tensor] = {}
        self.aliased_inputs: list[int] = []
        self.model64: Any = None  # the model in float64, for the fp64 comparison
        self.exact: dict[str, Any] = {}  # per trial: the fp64 reference's outputs (or None)
        self.input_domain: Any = None  # the problem's INPUT_DOMAIN (clamps the value ranges)

    def cmd_judge(self, request: JudgeSetup, fds: list[int]) -> tuple[JudgeSetupReply, list[int]]:
        """No module, no model: the engine supplies what a comparison needs (see the module's docstring)."""
        self.device = resolve_device(request.device)
        prepare_device(request.device)
        return JudgeSetupReply(environment=environment(self.device)), []

    def cmd_setup(self, request: ReferenceSetup, fds: list[int]) -> tuple[ReferenceSetupReply, list[int]]:
        self.device = resolve_device(request.device)
        self.keep_file = write_source(request.path, request.source)
        try:
            self.module = load_module(self.keep_file, "referee_problem")
        except Exception as exc:
            raise ProblemError(f"the reference module failed to import: {type(exc).__name__}: {exc}") from exc
        missing = [name for name in REQUIRED if not hasattr(self.module, name)]
        if missing:
            raise ProblemError(f"the reference module does not define {', '.join(missing)}")
        self.input_sets = request.input_sets or [{}]
        self.dtype = PRECISIONS[request.precision]
        strict = request.mode == "strict"
        randomize = strict and bool(getattr(self.module, "RANDOMIZE_PARAMETERS", True))
        self.input_domain = getattr(self.module, "INPUT_DOMAIN", None)
        # The request's tolerance (when it sets one), else the problem's.
        tolerance = (
            request.atol if request.atol is not None else getattr(self.module, "ATOL", None),
            request.rtol if request.rtol is not None else getattr(self.module, "RTOL", None),
        )
        value_ranges: list[str] = []
        seed = request.init_seed
        try:
            init_inputs = [_cast(x, self.dtype) for x in self.module.get_init_inputs()]
            torch.manual_seed(seed)
            with torch.device(self.device):
                self.model = self.module.Model(*init_inputs)
            if isinstance(self.model, torch.nn.Module):
                self.model = self.model.to(self.device)
                if self.dtype != torch.float32:
                    self.model = self.model.to(self.dtype)
            if randomize:  # the candidate's model gets the same draw (hardening.py)
                hardening.randomize_parameters(self.model, seed)
            self.model64 = compare.exact_model(self.model)
            if request.checked:  # built again for a cached problem: its sets and warnings are known
                valid_sets, warnings = list(range(len(self.input_sets))), []
                description, init_fd = None, None
                # One forward and comparison now, in the background: the first use of their kernels
                # (lazily loaded) would otherwise fall on the judged trials.
                warm = self.forward(self.make_inputs(0, seed))
                compare.compare_outputs(warm, warm, None, None)
            else:
                valid_sets = self._valid_sets(seed)
                if strict:
                    value_ranges = self._valid_value_ranges(seed, *tolerance, request.value_ranges)
                warnings = self._check_not_degenerate(seed, value_ranges, *tolerance, refuse=strict)
                description, init_fd = tensors.share_bytes(init_inputs)
        except ProblemError:
            raise
        except Exception as exc:
            raise ProblemError(f"the reference problem failed to run: {type(exc).__name__}: {exc}") from exc
        reply = ReferenceSetupReply(
            environment=environment(self.device),
            init_inputs=description,
            atol=getattr(self.module, "ATOL", None),
            rtol=getattr(self.module, "RTOL", None),
            allowed_ops=[str(op) for op in getattr(self.module, "ALLOWED_OPS", [])],
            warnings=warnings,
            valid_sets=valid_sets,
            randomize_parameters=randomize,
            value_ranges=value_ranges,
            mutates_inputs=sorted(self.last_mutated),  # from the last forward of the setup
            aliases_inputs=self.aliased_inputs,
        )
        return reply, [init_fd] if init_fd is not None else []

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
        inputs = [_cast(x.to(self.device), self.dtype) if isinstance(x, torch.Tensor) else x for x in inputs]
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

    def _valid_value_ranges(
        self, seed: int, atol: float | None, rtol: float | None, requested: list[str] | None = None
    ) -> list[str]:
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
                rounded = (
                    type(exact)(t.to(o.dtype) for t, o in zip(exact, outputs, strict=True))
                    if isinstance(exact, (list, tuple))
                    else exact.to(outputs.dtype)
                )
                if not compare.compare_outputs(outputs, rounded, atol, rtol)["passed"]:
                    continue
            valid.append(name)
        return valid

    def _check_not_degenerate(
        self, seed: int, value_ranges: list[str], atol: float | None, rtol: float | None, refuse: bool = True
    ) -> list[dict[str, Any]]:
        """A problem whose output is the same, at its own tolerance, for three draws and every value
        range cannot tell a kernel from a constant: it is refused (ProblemError). In the
        KernelBench-compatible mode (`refuse` False) it is judged, with the degenerate_problem warning."""
        outputs = [self.forward(self.make_inputs(0, seed + k)) for k in (1, 2, 3)]
        outputs += [self.forward(self.make_inputs(0, seed + 1, name)) for name in value_ranges]
        evidence = hardening.degenerate(outputs, atol, rtol)
        if evidence is None or getattr(self.module, "ALLOW_DEGENERATE", False):
            return []
        if not refuse:
            return [
                {
                    "rule": "degenerate_problem",
                    "severity": "warning",
                    "evidence": evidence,
                    "message": "the reference output is the same for different inputs at the problem's tolerance; "
                    "a candidate that ignores its inputs could pass",
                }
            ]
        raise ProblemError(
            f"degenerate problem: the reference output is the same at the problem's tolerance for {evidence['draws']} "
            f"different inputs (largest difference {evidence['max_abs_difference']:.3g}), so it cannot tell a kernel "
            "from a constant; change get_inputs (or set ALLOW_DEGENERATE = True to judge it anyway)"
        )

    def cmd_inputs(self, request: TrialInputs, fds: list[int]) -> tuple[TrialInputsReply, list[int]]:
        """A trial's inputs, made here (or, as a judge, from the engine's cached inputs and expected
        outputs: two sealed memfds) and shared with the candidate: a memfd on the CPU, an allocation
        of their own exported by CUDA IPC on the GPU. This process keeps the pristine inputs and the
        expected outputs in its private memory, which no shared buffer reaches. With
        `expected_budget` (bytes), the inputs and expected outputs also come back as sealed memfds
        for the engine's reference-data cache (`record`), or `record: null` when they exceed it."""
        trial, cached = request.trial, request.cached
        if cached is not None:
            inputs = tensors.decode_fd(cached.inputs, fds[0], self.device)
            expected, exact = compare.unpack_expected(tensors.decode_fd(cached.expected, fds[1], self.device))
        else:
            inputs = self.make_inputs(request.set_index or 0, request.seed or 0, request.values)
            expected = self.forward(inputs)
            self.mutated[trial] = self.last_mutated
            exact = compare.exact_outputs(self.model64, inputs, expected)
        self.exact[trial] = exact
        shared = tensors.SharedValue(inputs, self.device)
        self.trials[trial] = (inputs, shared, expected)
        shapes = [list(x.shape) for x in inputs if isinstance(x, torch.Tensor)]
        outgoing = shared.take_fds()
        record = None
        if request.expected_budget is not None and _nbytes(inputs) + _nbytes(expected) <= request.expected_budget:
            try:
                inputs_desc, inputs_fd = tensors.share_bytes(inputs)
                expected_desc, expected_fd = tensors.share_bytes(compare.pack_expected(expected, exact))
                record = TrialRecord(inputs=inputs_desc, expected=expected_desc, fds=[len(outgoing), len(outgoing) + 1])
                outgoing += [inputs_fd, expected_fd]
            except tensors.EncodeError:
                pass
        reply = TrialInputsReply(
            inputs=shared.description,
            shapes=shapes,
            nbytes=TrialSizes(inputs=_nbytes(inputs), expected=_nbytes(expected)),
            record=record,
        )
        return reply, outgoing

    def cmd_compare(self, request: Compare, fds: list[int]) -> tuple[CompareReply, list[int]]:
        """Read the candidate's outputs where they are (its sealed memfd, or its GPU memory by IPC
        handle), compare them with the expected outputs, and the shared inputs with the pristine ones."""
        inputs, shared, expected = self.trials.pop(request.trial)
        exact = self.exact.pop(request.trial, None)
        attached = tensors.Attached(self.device)
        try:
            report = self._judge(expected, request.outputs, fds, attached, request.atol, request.rtol, exact)
            report["inputs"] = compare.inputs_unchanged(
                inputs, shared.value, self.mutated.pop(request.trial, None), request.atol, request.rtol
            )
        finally:
            attached.close()
            shared.release()
        return CompareReply(report=decode(ComparisonReport, report)), []

    def _judge(
        self,
        expected: Any,
        outputs: Any,
        fds: list[int],
        attached: tensors.Attached,
        atol: float | None,
        rtol: float | None,
        exact: Any = None,
    ) -> dict[str, Any]:
        if outputs is None:  # the candidate's outputs could not be exported
            return {"passed": False, "reason": "outputs are not plain dense tensors", "outputs": []}
        try:
            actual = attached.attach(outputs, fds, sealed=True)
        except (tensors.EncodeError, OSError, ValueError) as exc:  # what the candidate sent is not its outputs
            return {
                "passed": False,
                "undecodable": str(exc)[:500],
                "outputs": [],
                "reason": "the candidate process sent outputs that cannot be read",
            }
        return compare.compare_outputs(expected, actual, atol, rtol, exact)

    def cmd_timing_inputs(self, request: TimingInputs, fds: list[int]) -> tuple[TimingInputsReply, list[int]]:
        """The timed loop's input sets: one shared buffer per set, whose contents `refresh` rewrites
        before every round of the candidate's."""
        self._release_timing()
        self.timing_shared = [tensors.SharedValue(self.make_inputs(0, seed), self.device) for seed in request.seeds]
        # The reference is timed on the shared buffers themselves (no second copy on the device):
        # the candidate's processes are stopped while it is.
        self.timing_inputs = [list(shared.value) for shared in self.timing_shared]
        descriptions: list[Any] = []
        outgoing: list[int] = []
        for shared in self.timing_shared:
            descriptions.append(tensors.renumber(shared.description, len(outgoing)))
            outgoing += shared.take_fds()
        return TimingInputsReply(inputs=descriptions), outgoing

    def cmd_refresh(self, request: Refresh, fds: list[int]) -> tuple[Done, list[int]]:
        """Fresh values (seeds the candidate never sees) in every shared timing set, and their
        expected outputs, before a timed round of the candidate."""
        self.round_pristine, self.round_expected, self.round_exact, self.round_mutated = [], [], [], []
        for shared, seed in zip(self.timing_shared, request.seeds, strict=True):
            fresh = self.make_inputs(0, seed)
            shared.refresh(fresh)
            self.round_pristine.append(fresh)
            expected = self.forward(fresh)
            self.round_expected.append(expected)
            self.round_mutated.append(self.last_mutated)  # what an in-place reference leaves in its inputs
            # The timed calls are judged as the trials are (the fp64 allowance included): an honest
            # kernel that sums in another order must not fail here where it passed there.
            self.round_exact.append(compare.exact_outputs(self.model64, fresh, expected))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return Done(), []

    def cmd_check_round(self, request: CheckRound, fds: list[int]) -> tuple[CheckRoundReply, list[int]]:
        """Compare the outputs of the timed calls the engine picked after the round (the candidate
        is stopped meanwhile), and the shared sets with what was written into them."""
        results = []
        attached = tensors.Attached(self.device)
        try:
            for check in request.checks:
                report = self._judge(
                    self.round_expected[check.set],
                    check.outputs,
                    fds,
                    attached,
                    request.atol,
                    request.rtol,
                    self.round_exact[check.set],
                )
                results.append(
                    CallCheck(
                        call=check.call,
                        set=check.set,
                        passed=bool(report.get("passed")),
                        reason=report.get("reason"),
                        undecodable=report.get("undecodable"),
                    )
                )
        finally:
            attached.close()
        changed = [
            k
            for k, (shared, fresh) in enumerate(zip(self.timing_shared, self.round_pristine, strict=True))
            if not compare.inputs_unchanged(
                fresh, shared.value, self.round_mutated[k] if k < len(self.round_mutated) else None, request.atol, request.rtol
            )["unchanged"]
        ]
        return CheckRoundReply(checks=results, changed_sets=changed), []

    def cmd_time(self, request: TimeReference, fds: list[int]) -> tuple[TimeReply, list[int]]:
        """Time the reference on its private timing inputs; raw per-call samples go to the engine,
        which makes the statistics (the engine stops the candidate's processes meanwhile)."""
        model = self.model
        if request.compiled:  # the torch.compile baseline; compiled (and warmed) before the timer starts
            if self.compiled is None:
                self.compiled = torch.compile(self.model)
                with torch.no_grad():
                    self.compiled(*self.timing_inputs[0])
            model = self.compiled
        with torch.no_grad():  # entered once around the loop, as on the candidate's side
            if self.device.type == "cuda":
                stats = CudaTimer(self.device).run(
                    lambda inputs: model(*inputs), self.timing_inputs, max_seconds=request.options.max_seconds
                )
            else:
                stats = time_on_host(lambda inputs: model(*inputs), self.timing_inputs)
        return TimeReply(stats=stats), []

    def _release_timing(self) -> None:
        for shared in getattr(self, "timing_shared", []):
            shared.release()
        self.timing_shared = []


def _nbytes(value: Any) -> int:
    return sum(x.numel() * x.element_size() for x in compare.flatten_outputs(value) if isinstance(x, torch.Tensor))
