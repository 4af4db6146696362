"""The candidate role: untrusted code runs here. This process only runs the candidate and measures
it; it never sees the expected outputs and never decides a verdict. Everything it reports is a
claim: its outputs (left where the reference reads them: a sealed memfd, or its GPU memory by IPC
handle), launch counts, and raw per-call timing samples (no statistics are computed here)."""

from __future__ import annotations

import dataclasses
import importlib
import os
from typing import Any

import torch

from . import tensors, triton_cache
from .audit import AuditGuard, native_files
from .dispatch import OpRecorder, compute_ops
from .hardening import randomize_parameters
from .integrity import IntegritySnapshot
from .launches import LaunchRecorder
from .messages import (
    CandidateSetup,
    CandidateSetupReply,
    CandidateTimingInputs,
    Done,
    ErrorDetail,
    ErrorReply,
    Launchers,
    LaunchSummary,
    MemoryBudget,
    Prepare,
    Profile,
    ProfileReply,
    Run,
    RunReply,
    Summary,
    SummaryReply,
    TimedRoundReply,
    TimeRound,
    Work,
)
from .runtime import environment, error_reply, host_clock_autotuning, load_module, prepare_device, resolve_device, write_source
from .timing import CudaTimer, profile_kernels, round_on_host
from .witness import OpWitness
from .work import WorkMeter, launch_bytes, unwritten_outputs


def _compile_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that mean a kernel did not compile (the interpreter's stand-in included)."""
    found: list[type[BaseException]] = [SyntaxError]
    for module_name, class_name in (
        ("triton.compiler.errors", "CompilationError"),
        ("triton.runtime.errors", "InterpreterError"),
        ("triton.runtime.errors", "OutOfResources"),
        ("triton.runtime.errors", "PTXASError"),
    ):
        try:
            module = __import__(module_name, fromlist=[class_name])
            found.append(getattr(module, class_name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


class CandidateFailed(Exception):
    """Raised with a ready error reply when the candidate's own code fails."""

    def __init__(self, reply: ErrorReply) -> None:
        super().__init__(reply.error.message)
        self.reply = reply


class CandidateRole:
    def __init__(self) -> None:
        self.model: Any = None
        self.device = torch.device("cpu")
        self.path = ""
        self.recorder: LaunchRecorder | None = None
        self.ops = OpRecorder()
        self.witness = OpWitness()  # a second op recorder the candidate cannot pop (witness.py)
        self.audit: AuditGuard | None = None
        self.snapshot: IntegritySnapshot | None = None
        self.allowed_ops: frozenset[str] = frozenset()
        self.allow_native = False
        self.compile_errors = _compile_error_types()
        # The helpers this role relies on, bound before the candidate is imported: the candidate runs
        # in this process and could rebind the module-level names (the snapshot reports it if so).
        self._compute_ops = compute_ops
        self._export = tensors.export_outputs
        self._renumber = tensors.renumber
        self._encode_error = tensors.EncodeError
        self.kept: Any = None
        self.trial_inputs: tensors.Attached | None = None
        self.timing_attached: tensors.Attached | None = None
        self.timing_sets: list[list[Any]] = []
        self.timer: CudaTimer | None = None
        self.native_recorder: Any = None
        self._aliased_inputs = _aliased_inputs
        self._unwritten_outputs = unwritten_outputs
        self._launch_bytes = launch_bytes
        self._randomize_parameters = randomize_parameters
        self.meter = WorkMeter(lambda: self.recorder.launches if self.recorder is not None else [])
        self.ops.meter = self.meter
        self._hidden_compute = self.witness.take_hidden
        self._native_files = native_files

    def _failure(self, exc: BaseException, default_kind: str = "runtime_error") -> CandidateFailed:
        kind = "compile_error" if isinstance(exc, self.compile_errors) else default_kind
        reply = error_reply(kind, exc, self.path)
        if isinstance(exc, torch.cuda.OutOfMemoryError) and self.device.type == "cuda":
            # The budget on the device: what the GPU has (less what others hold), and what this process held.
            free, total = torch.cuda.mem_get_info(self.device)
            budget = MemoryBudget(
                memory="device",
                budget_bytes=int(total),
                free_bytes=int(free),
                used_bytes=int(torch.cuda.max_memory_reserved(self.device)),
            )
            reply = dataclasses.replace(reply, error=dataclasses.replace(reply.error, memory_budget=budget))
        reply = dataclasses.replace(reply, **self.observations())  # a refused call that ended the run is still evidence
        return CandidateFailed(reply)

    def cmd_prepare(self, request: Prepare, fds: list[int]) -> tuple[Done, list[int]]:
        prepare_device(request.device)
        # What `setup` needs imported before its snapshot (see there), imported here instead, on every
        # device: the engine overlaps `prepare` with the reference's set-up, and torch._dynamo alone
        # takes seconds to import, which were on the critical path of every one-shot check.
        importlib.import_module("torch._dynamo")
        return Done(), []

    def cmd_setup(self, request: CandidateSetup, fds: list[int]) -> tuple[CandidateSetupReply | ErrorReply, list[int]]:
        self.device = resolve_device(request.device)
        self.path = write_source(request.path, request.source)
        self.meter.device_type, self.meter.candidate_file = self.device.type, self.path
        init_inputs = (
            tensors.decode_fd(request.init_inputs, fds[0], "cpu", limit=1 << 30)
            if fds
            else (tensors.decode(request.init_inputs, b"", "cpu"))
        )
        self.allowed_ops = frozenset(request.allowed_ops)
        # Order matters: hooks first, then the snapshot (so it covers them), then the candidate.
        self.recorder = LaunchRecorder(
            candidate_file=self.path,
            op_clock=self.ops.clock,
            on_gpu=self.device.type == "cuda" and os.environ.get("TRITON_INTERPRET") != "1",
        )
        self.recorder.install()
        if os.environ.get("TRITON_INTERPRET") == "1":
            host_clock_autotuning()
        # Bound before the witness's first entry: a kineto session, once stopped, leaves CUPTI with
        # kineto's buffer callbacks and its activity kinds disabled, and the recorder records nothing
        # more (tests/gpu/test_native_recorder.py). Where the recorder runs, the witness opens none.
        self.native_recorder = self._native_recorder()  # bound before the candidate is imported
        self.witness.profiling = self.native_recorder is None
        with (
            self.witness,
            self.ops,
        ):  # the first entry may import lazily (torch._dynamo rewraps torch functions): before the snapshot
            torch.empty(0)
        self.ops.take()
        self.witness.take()
        # torch._dynamo rewraps torch.manual_seed when imported; the profiler, @torch.compiler.disable and
        # torch.library.custom_op import it lazily: before the snapshot, on every device.
        importlib.import_module("torch._dynamo")
        # The operator's switch (REFEREE_ALLOW_NATIVE_CODE, from the worker's settings): builds, loads and ELF files allowed.
        self.allow_native = request.allow_native_code
        if request.audit_hook:  # off only by the operator's test switch (REFEREE_UNSAFE_NO_AUDIT_HOOK)
            self.audit = AuditGuard(self.path, os.path.dirname(self.path), allow_native=self.allow_native)
            self.audit.install()
        self.snapshot = IntegritySnapshot()
        self._integrity_changes = self.snapshot.changes
        if self.audit is not None:
            self.audit.active = True
        try:
            module = load_module(self.path, "referee_candidate")
        except BaseException as exc:
            raise self._failure(exc) from None
        model_class = getattr(module, "ModelNew", None)
        if model_class is None:
            return ErrorReply(
                error=ErrorDetail(
                    kind="invalid_submission",
                    type="MissingModelNew",
                    message="the candidate does not define ModelNew",
                    traceback="",
                )
            ), []
        try:
            torch.manual_seed(request.init_seed)
            with torch.device(self.device):
                self.model = model_class(*init_inputs)
            if isinstance(self.model, torch.nn.Module):
                self.model = self.model.to(self.device)
                if request.precision in ("fp16", "bf16"):  # KernelBench casts the candidate's model too
                    self.model = self.model.to({"fp16": torch.float16, "bf16": torch.bfloat16}[request.precision])
        except BaseException as exc:
            raise self._failure(exc) from None
        if request.randomize_parameters:  # the reference's model got the same draw (hardening.py)
            self._randomize_parameters(self.model, request.init_seed)
        return CandidateSetupReply(environment=environment(self.device), **self.observations()), []

    def observations(self) -> dict[str, Any]:
        """What the watchers saw since the last reply: integrity changes and refused calls."""
        events = []
        if self.audit is not None:
            events = list(self.audit.events)
            self.audit.events.clear()  # in place: the hook holds this very list
        changes = self._integrity_changes() if self.snapshot is not None else []
        _, witness_failure = self.witness.take()
        if witness_failure:
            changes.append(witness_failure)
        host_memory = 0
        if self.recorder is not None:
            host_memory, self.recorder.host_memory_launches = self.recorder.host_memory_launches, 0
        return {
            "tampering": changes,
            "audit_events": events,
            "host_memory_launches": host_memory,
            "threads_left_running": self.witness.take_threads(),
            "native_files": [] if self.allow_native else self._native_files(os.path.dirname(self.path)),
            "hidden_compute": self._take_hidden(),
        }

    def _take_hidden(self) -> dict[str, int]:
        """Compute ops the op witness saw and the dispatch mode did not, since the last reply."""
        seen, self.ops.taken = self.ops.taken + self.ops.ops, type(self.ops.taken)()
        return self._hidden_compute(seen, self.allowed_ops)

    def _poison(self, inputs: list[Any]) -> None:
        """Fill memory the allocator will hand out next with NaN (0xFF bytes), so output elements a
        kernel never writes cannot pass by luck or by recycling someone else's result."""
        nbytes = sum(x.numel() * x.element_size() for x in inputs if isinstance(x, torch.Tensor))
        poison = torch.empty(min(2 * nbytes + (1 << 20), 2 << 30), dtype=torch.uint8, device=self.device)
        poison.fill_(0xFF)
        del poison

    def _forward(self, inputs: list[Any]) -> Any:
        self._poison(inputs)
        try:
            with self.witness, torch.no_grad(), self.ops:
                outputs = self.model(*inputs)
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            return outputs
        except BaseException as exc:
            raise self._failure(exc) from None

    def _native_recorder(self) -> Any:
        """The native recorder this process was started with (the `native` package, where present)."""
        try:
            from . import native
        except ImportError:
            return None
        active = getattr(native, "active", None)
        return active() if active is not None else None

    def _let_go(self) -> None:
        """Drop what the previous command kept for the reference to read (its outputs, the trial's
        mapped inputs): the reference has read them by the time the next command comes."""
        self.kept = None
        if self.trial_inputs is not None:
            self.trial_inputs.close()
            self.trial_inputs = None

    def cmd_run(self, request: Run, fds: list[int]) -> tuple[RunReply, list[int]]:
        assert self.recorder is not None
        self._let_go()
        self.trial_inputs = tensors.Attached(self.device)
        try:  # the inputs the reference shared: mapped, never copied (writes reach the reference)
            inputs = list(self.trial_inputs.attach(request.inputs, fds, writable=True))
        except tensors.EncodeError as exc:
            raise CandidateFailed(ErrorReply(error=ErrorDetail(kind="infrastructure_error", message=str(exc)))) from None
        self.recorder.take()
        self.meter.start(inputs)
        outputs = self._forward(inputs)
        launches = self.recorder.take()
        ops, device_to_host = self.ops.take()
        work = self.meter.take()
        derived = work.pop("derived")
        work["triton_bytes"] = self._launch_bytes(launches)
        written = set().union(*(launch.storages for launch in launches)) if launches else set()
        figures: dict[str, Any] = {
            "launches": sum(1 for launch in launches if launch.own),
            "foreign_launches": sorted({launch.kernel for launch in launches if not launch.own}),
            "aliases_input": self._aliased_inputs(outputs, inputs),
            "compute_ops": self._compute_ops(ops, self.allowed_ops),
            "device_to_host": device_to_host,
            "unwritten_outputs": self._unwritten_outputs(outputs, written, derived, work["scalar_reads_of_kernel_data"] > 0),
            "work": Work(**work),
            "host_written_outputs": self.recorder.host_written(outputs, launches),
            "side_stream_launches": sum(1 for launch in launches if launch.side_stream),
            **self.observations(),
        }
        try:
            description, outgoing = self._export(outputs, self.device)
            reply = RunReply(**figures, outputs=description)
        except (self._encode_error, RuntimeError) as exc:
            reply, outgoing = RunReply(**figures, output_problem=str(exc)[:500]), []
        self.kept = outputs  # alive until the reference has read them
        return reply, outgoing

    def cmd_timing_inputs(self, request: CandidateTimingInputs, fds: list[int]) -> tuple[Done, list[int]]:
        """Map the shared timing sets (the reference rewrites their contents before every round)."""
        self.timing_attached = tensors.Attached(self.device)
        self.timing_sets = [list(self.timing_attached.attach(d, fds, writable=True)) for d in request.inputs]
        return Done(), []

    def cmd_time_round(self, request: TimeRound, fds: list[int]) -> tuple[TimedRoundReply, list[int]]:
        """One round of timed calls on the shared sets: the raw per-call samples (no statistics
        here), and every call's outputs, kept and exported so the reference can check any of them
        (which ones, the engine decides after this reply)."""
        assert self.recorder is not None
        self._let_go()
        self.recorder.take()
        calls, start = request.calls, request.start
        self.meter.reset()
        # The op recorder stays on while timed (entered once, not per call): a candidate cannot tell
        # the timed calls from the checked ones by looking for it.
        self.recorder.keep_storages = self.meter.tracking = False
        try:
            with self.witness, torch.no_grad(), self.ops:
                if self.device.type == "cuda":
                    if self.timer is None:
                        self.timer = CudaTimer(self.device)
                    timed = self.timer.round(
                        lambda inputs: self.model(*inputs),
                        self.timing_sets,
                        calls,
                        start,
                        request.slack_s,
                        self.native_recorder,
                        request.first_label,
                    )
                else:
                    timed = round_on_host(lambda inputs: self.model(*inputs), self.timing_sets, calls, start)
        except BaseException as exc:
            raise self._failure(exc) from None
        finally:
            self.recorder.keep_storages = self.meter.tracking = True
        launches = self.recorder.take()
        ops, device_to_host = self.ops.take()
        work = self.meter.take()
        work.pop("derived")
        work["triton_bytes"] = self._launch_bytes(launches)
        outputs: list[Any] = []
        outgoing: list[int] = []
        try:
            for value in timed.pop("outputs"):
                description, sent = self._export(value, self.device)
                outputs.append(self._renumber(description, len(outgoing)))
                outgoing += sent
        except (self._encode_error, RuntimeError) as exc:
            for fd in outgoing:
                os.close(fd)
            return TimedRoundReply(output_problem=str(exc)[:500], samples=timed["samples"], **self.observations()), []
        self.kept = timed  # the outputs stay alive until the next command
        return TimedRoundReply(
            **timed,
            outputs=outputs,
            launches=sum(1 for launch in launches if launch.own),
            compute_ops=self._compute_ops(ops, self.allowed_ops),
            work=Work(**work),
            side_stream_launches=sum(1 for launch in launches if launch.side_stream),
            device_to_host=device_to_host,
            **self.observations(),
        ), outgoing

    def cmd_profile(self, request: Profile, fds: list[int]) -> tuple[ProfileReply, list[int]]:
        """GPU only: the share of kernel time spent in the submission's own Triton kernels."""
        assert self.recorder is not None
        self._let_go()
        input_sets = self.timing_sets
        own = set(self.recorder.totals)
        try:
            kernel_times = profile_kernels(lambda inputs: self.model(*inputs), input_sets, self.ops)
        except BaseException as exc:
            raise self._failure(exc) from None
        self.recorder.take()
        self.ops.take()
        total = sum(kernel_times.values())
        own_time = sum(t for name, t in kernel_times.items() if any(name == k or name.startswith(k + "_") for k in own))
        top = sorted(kernel_times.items(), key=lambda item: -item[1])[:10]
        return ProfileReply(fraction=own_time / total if total else None, kernels_us=dict(top), **self.observations()), []

    def cmd_summary(self, request: Summary, fds: list[int]) -> tuple[SummaryReply, list[int]]:
        assert self.recorder is not None
        launchers = triton_cache.seeds.report() if triton_cache.seeds is not None else None
        return SummaryReply(
            summary=LaunchSummary(**self.recorder.summary()), launchers=Launchers(**launchers) if launchers is not None else None
        ), []


def _aliased_inputs(outputs: Any, inputs: list[Any]) -> list[int]:
    """Indices of inputs whose storage an output shares."""
    output_storages = {
        t.untyped_storage().data_ptr()
        for t in (outputs if isinstance(outputs, (list, tuple)) else [outputs])
        if isinstance(t, torch.Tensor) and t.layout == torch.strided and t.untyped_storage().nbytes()
    }
    return [
        index
        for index, x in enumerate(inputs)
        if isinstance(x, torch.Tensor) and x.untyped_storage().nbytes() and x.untyped_storage().data_ptr() in output_storages
    ]
