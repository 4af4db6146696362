"""Anti-cheat rules: stable ids, severity, and the message a model gets when one fires.

The ids are a public contract (docs/anticheat.md lists them); never rename one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .models import Severity, Violation


@dataclass(frozen=True)
class Rule:
    id: str
    severity: Severity
    catches: str
    how: str
    message: str


RULES: dict[str, Rule] = {
    rule.id: rule
    for rule in (
        Rule(
            "no_triton_launch",
            Severity.fatal,
            "decoy kernels: a @triton.jit kernel is defined but forward never launches it",
            "hooks on Triton's launch path count launches of kernels defined in the submission, per forward call",
            "forward() did not launch any Triton kernel defined in your submission; the work must be done by your Triton kernels",
        ),
        Rule(
            "input_mutation",
            Severity.fatal,
            "inputs overwritten (zeroed, or computed in place)",
            "the inputs the candidate received are compared bit for bit with pristine copies in the reference process; an "
            "input the reference itself changes in place (inplace=True) may also come back as the reference leaves it",
            "forward() modified its input tensors; inputs must be left unchanged (write results to new output tensors)",
        ),
        Rule(
            "output_aliases_input",
            Severity.fatal,
            "returning an input (or a view of it) as the output",
            "the storage of every returned tensor is compared with the storage of every input (allowed for an input "
            "the reference itself returns, as an in-place module does)",
            "an output shares memory with an input; allocate a fresh output tensor (e.g. torch.empty_like) and write it with your kernel",
        ),
        Rule(
            "non_plain_output",
            Severity.fatal,
            "lazy outputs: tensor subclasses or non-strided tensors that compute only when compared",
            "every returned tensor must be exactly torch.Tensor with strided layout and real storage",
            "forward() returned something that is not a plain dense torch.Tensor; return ordinary tensors",
        ),
        Rule(
            "torch_fallback",
            Severity.fatal,
            "PyTorch fallback: forward computes with torch ops, nn modules or F.*, whole or in a major part",
            "a TorchDispatchMode records every aten op dispatched during every forward call and the bytes each compute op "
            "touches (ops other than allocation, views/reshapes, copies and casts; sandbox/harness/dispatch.py); a major "
            "op (matmul, convolution, softmax, normalisation, pooling, ...) in torch, or torch compute above "
            "torch_epilogue_max_share of the bytes touched, is a fallback (worker/proportion.py)",
            "forward() computed with PyTorch operators instead of your Triton kernels; only allocation, views, "
            "reshapes and copies may happen outside the kernels",
        ),
        Rule(
            "torch_epilogue",
            Severity.warning,
            "a small final step in torch (a .sum() over per-block partial sums, out / n, the product of a shape)",
            "the bytes touched by torch compute ops, against those of the submission's Triton launches, are at most "
            "torch_epilogue_max_share and no major op (matmul, convolution, softmax, normalisation, ...) ran in torch; "
            "the reward is reduced by torch_epilogue_penalty (worker/proportion.py)",
            "a small part of forward() ran in PyTorch after your kernels; it is accepted, with a reduced reward: "
            "fold it into a kernel for the full reward",
        ),
        Rule(
            "output_not_written_by_kernel",
            Severity.fatal,
            "outputs produced elsewhere (a decoy launch on a scratch buffer, a cached tensor, a torch result)",
            "the storage of every returned tensor must have been an argument of a Triton launch in the same forward call, "
            "or computed by torch ops from such data (a copy, an allowed epilogue), or be a one-element tensor made from "
            "a scalar read of such data (not applied when the problem or request allows torch ops)",
            "a returned tensor was not passed to any of your Triton kernels in that call; return the buffers your kernels write",
        ),
        Rule(
            "tampering",
            Severity.fatal,
            "patched timers or checkers: reassigning torch, torch.Tensor, torch.cuda.Event, time, triton.testing or builtins attributes",
            "identity snapshot of every function and class reachable from the critical objects, taken before import "
            "and verified after import and every phase",
            "your code replaced functions of torch, triton, time or builtins; submissions must not patch the runtime",
        ),
        Rule(
            "forbidden_call",
            Severity.fatal,
            "stealing the expected output (gc, frame walking, reading the reference), escaping (processes, sockets, "
            "signals, ctypes), writes outside the job directory",
            "a PEP 578 audit hook installed before import refuses these events when untrusted code asks for them",
            "your code called something the sandbox forbids (introspection, processes, network, signals, files outside "
            "the job); kernels need none of these",
        ),
        Rule(
            "device_to_host_transfer",
            Severity.fatal,
            "CPU / numpy detour: copying to the host to compute there",
            "device-to-host copies dispatched during forward are counted (GPU only); scalar reads (.item()) are allowed "
            "up to max_scalar_reads per call (all devices)",
            "forward() copied data from the GPU to the host; compute on the GPU with your Triton kernels",
        ),
        Rule(
            "foreign_kernel",
            Severity.fatal,
            "someone else's kernels: torch.compile/inductor, a library's or exec'd Triton kernels doing the work",
            "the launch hook records where each launched kernel's Python function was defined; only the submitted "
            "file counts (policy switch: allow_foreign_kernels)",
            "a Triton kernel not defined in your submission was launched; write the kernels yourself in the submitted file",
        ),
        Rule(
            "side_stream",
            Severity.fatal,
            "side streams: launching on another CUDA stream so the timing events stop early",
            "the launch hook compares the current CUDA stream with the default stream at every launch (GPU only)",
            "a kernel was launched on a non-default CUDA stream; launch everything on the current default stream",
        ),
        Rule(
            "background_thread",
            Severity.fatal,
            "background threads that finish the work after forward returns",
            "every function that starts a thread is wrapped before import; untrusted callers are refused",
            "your code started a thread; forward must do its work synchronously",
        ),
        Rule(
            "native_code",
            Severity.fatal,
            "native code built or loaded on the candidate's behalf: torch.utils.cpp_extension / load_inline, ninja, "
            "gcc, a shared library written into the job directory, ctypes or torch.ops.load_library of one",
            "the audit hook refuses build tools (unless Triton's own launcher builder, by code identity, is running) "
            "and loading libraries from outside the system's and the trusted packages' directories, whoever the "
            "caller; the job directory is scanned for ELF files after every phase (operator switch: "
            "REFEREE_ALLOW_NATIVE_CODE=1)",
            "your code built or loaded native code; only Triton kernels are accepted (native extensions run outside every check)",
        ),
        Rule(
            "cuda_graph",
            Severity.fatal,
            "CUDA graphs captured in __init__ (or anywhere) and replayed in forward: launches the hooks cannot attribute",
            "the CUDA graph capture and replay methods are replaced before import; calling them is refused (GPU only)",
            "your code captured or replayed a CUDA graph; launch your Triton kernels directly in forward",
        ),
        Rule(
            "low_triton_time_fraction",
            Severity.fatal,
            "partial fallback that dispatch tracing cannot see (other libraries' GPU kernels doing the work)",
            "torch's profiler measures GPU kernel time per kernel; the share in the submission's Triton kernels must "
            "reach min_triton_time_fraction (GPU only)",
            "most of the GPU time was spent outside your Triton kernels; do the work in your kernels",
        ),
        Rule(
            "timed_output_mismatch",
            Severity.fatal,
            "timed calls that skip the work: replaying an earlier output (by input identity, by time, by shape), "
            "or computing only when the result is inspected",
            "timed calls run in rounds on shared inputs the reference rewrites with fresh values before each round; "
            "every call's outputs are kept, and calls the engine picks at random after the round are checked by the "
            "reference while the candidate is stopped",
            "a timed call returned outputs that do not match its inputs; every call must compute its result",
        ),
        Rule(
            "timing_claim_inconsistent",
            Severity.fatal,
            "forged timing samples: per-call times the candidate's process reports that its round cannot have taken",
            "the engine's own clock around each timed round bounds the sum of the per-call samples reported for it",
            "the timing your process reported is inconsistent with the time the round took",
        ),
        Rule(
            "protocol_violation",
            Severity.fatal,
            "forged or malformed replies: the candidate's code writing frames on the harness's channel, or "
            "rewriting what the harness reports, so that a reply breaks the protocol",
            "every reply of the candidate process is decoded strictly against its declared type "
            "(sandbox/harness/messages.py) before the judge reads it: a wrong type, a missing or extra key, a "
            "count out of range or an oversized value ends the evaluation",
            "your process sent the judge a reply that breaks the harness protocol; submissions must not touch the harness",
        ),
        Rule(
            "suspicious_source",
            Severity.warning,
            "obfuscation hints in the source: exec/eval/compile, getattr on torch with a computed name, "
            "__torch_function__/__torch_dispatch__, _make_subclass, gc/inspect/ctypes imports, try/except around a launch",
            "AST scan of the submission before anything runs (a hint only: dynamic checks decide)",
            "the source contains constructs typical of evaluator exploits",
        ),
        Rule(
            "degenerate_problem",
            Severity.warning,
            "problems whose reference output does not depend on the inputs, so constant outputs would pass",
            "the reference output for three draws and every value range is compared at the problem's tolerance; a "
            "degenerate problem is refused as a problem error (no verdict, no reward; docs/judging.md); the warning is "
            "given only in the KernelBench-compatible mode, which judges it anyway",
            "the reference output barely varies with its inputs; correctness on this problem says little",
        ),
    )
}


def rule_of_event(event: dict[str, Any]) -> str:
    """The rule a refused call reported by the audit hook belongs to."""
    name, reason = str(event.get("event", "")), str(event.get("reason", ""))
    if name == "thread.start":
        return "background_thread"
    if name.startswith("cuda.graph"):
        return "cuda_graph"
    if reason.startswith(("building native code", "loading a native library")):
        return "native_code"
    return "forbidden_call"


def violation(rule_id: str, evidence: dict[str, Any] | None = None, message: str | None = None) -> Violation:
    rule = RULES[rule_id]
    return Violation(rule=rule.id, severity=rule.severity, message=message or rule.message, evidence=evidence or {})
