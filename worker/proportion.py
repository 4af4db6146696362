"""Proportionate rules: how much of a forward call torch computed, and what follows from it.

The candidate's process measures (sandbox/harness/work.py): for each torch compute op the bytes
it touched, the bytes of the tensor arguments of the submission's own Triton launches, and the
scalar reads to the host. This module decides:

- a *major* op in torch (a matmul, convolution, softmax, normalisation, pooling, resampling,
  attention, sort) is `torch_fallback`, whatever its size: that is the work the kernel was to do;
- other compute ops are an *epilogue* when their share of the bytes touched, torch's against
  torch's plus the kernels', is at most `EvalConfig.torch_epilogue_max_share` (default 0.2): a
  `.sum()` over per-block partial sums, `out / n`, `torch.prod(torch.tensor(shape))`. That is
  the `torch_epilogue` warning, and the reward is reduced by `RewardConfig.torch_epilogue_penalty`;
  above the share it is `torch_fallback`;
- scalar reads (`.item()` of a scalar that the submission's kernels produced, e.g. a Triton
  reduction's result passed to a second kernel) are allowed up to `EvalConfig.max_scalar_reads`
  per call (their cost shows in the time); more, or on the GPU any scalar read of an input's or a
  parameter's values, is `device_to_host_transfer`, as data copies to the host are.
"""

from __future__ import annotations

from triton_referee.sandbox.harness.messages import Work

from . import rules
from .models import EvalConfig, Violation

# aten overload packets that are the substance of a problem, never an epilogue.
MAJOR_OPS = frozenset(
    {
        "mm",
        "addmm",
        "bmm",
        "baddbmm",
        "addbmm",
        "matmul",
        "linear",
        "mv",
        "addmv",
        "dot",
        "vdot",
        "einsum",
        "_addmm_activation",
        "addr",
        "tensordot",
        "_int_mm",
        "convolution",
        "_convolution",
        "conv1d",
        "conv2d",
        "conv3d",
        "conv_transpose1d",
        "conv_transpose2d",
        "conv_transpose3d",
        "cudnn_convolution",
        "cudnn_convolution_transpose",
        "mkldnn_convolution",
        "_slow_conv2d_forward",
        "slow_conv3d_forward",
        "slow_conv_transpose2d",
        "slow_conv_transpose3d",
        "_softmax",
        "_log_softmax",
        "softmax",
        "log_softmax",
        "_safe_softmax",
        "native_layer_norm",
        "layer_norm",
        "native_batch_norm",
        "_native_batch_norm_legit",
        "_native_batch_norm_legit_no_training",
        "batch_norm",
        "native_group_norm",
        "group_norm",
        "_fused_rms_norm",
        "rms_norm",
        "instance_norm",
        "max_pool2d_with_indices",
        "max_pool3d_with_indices",
        "max_pool1d",
        "max_pool2d",
        "avg_pool1d",
        "avg_pool2d",
        "avg_pool3d",
        "_adaptive_avg_pool2d",
        "_adaptive_avg_pool3d",
        "adaptive_max_pool2d",
        "adaptive_max_pool3d",
        "upsample_bilinear2d",
        "upsample_nearest1d",
        "upsample_nearest2d",
        "upsample_nearest3d",
        "upsample_bicubic2d",
        "upsample_linear1d",
        "upsample_trilinear3d",
        "_upsample_bilinear2d_aa",
        "grid_sampler_2d",
        "grid_sampler_3d",
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_cudnn_attention",
        "scaled_dot_product_attention",
        "_fused_sdp_choice",
        "sort",
        "topk",
        "cumsum",
        "cumprod",
        "_fft_r2c",
        "_fft_c2c",
        "_fft_c2r",
        "embedding_bag",
        "_embedding_bag",
        "_cdist_forward",
        "cdist",
        "_weight_norm_interface",
        "_cudnn_rnn",
        "lstm",
        "gru",
        "rnn_tanh",
        "rnn_relu",
    }
)


def is_major(op: str) -> bool:
    return op in MAJOR_OPS or op.startswith(("conv", "cudnn_", "miopen_", "mkldnn_", "_scaled_dot_product"))


def torch_share(work: Work, ops: list[str]) -> tuple[float, int, int]:
    """(share, torch bytes, kernel bytes) for the given compute ops of one reply."""
    torch_bytes = sum(work.torch_ops[op].bytes for op in ops if op in work.torch_ops)
    kernel_bytes = work.triton_bytes
    total = torch_bytes + kernel_bytes
    return (torch_bytes / total if total else 1.0), torch_bytes, kernel_bytes


def judge(
    reported_ops: dict[str, int] | None,
    work: Work | None,
    phase: str,
    config: EvalConfig,
    device: str,
    timed_calls: int = 0,
) -> tuple[list[Violation], list[Violation]]:
    """(fatal violations, warnings) for one reply of the candidate process (a run, or a round of
    `timed_calls` timed calls): the compute ops it reports and its work figures (None from a process
    without the work meter)."""
    compute_ops = reported_ops or {}
    fatal: list[Violation] = []
    warnings: list[Violation] = []
    if work is None:  # a process without the work meter: any compute op is a fallback
        if compute_ops:
            fatal.append(rules.violation("torch_fallback", {"phase": phase, "ops": compute_ops}))
        return fatal, warnings
    if compute_ops:
        ops = sorted(compute_ops)
        share, torch_bytes, kernel_bytes = torch_share(work, ops)
        major = [op for op in ops if is_major(op)]
        evidence = {
            "phase": phase,
            "ops": compute_ops,
            "torch_share": round(share, 4),
            "torch_bytes": torch_bytes,
            "kernel_bytes": kernel_bytes,
            "max_share": config.torch_epilogue_max_share,
        }
        if major:
            fatal.append(rules.violation("torch_fallback", {**evidence, "major_ops": major}))
        elif share > config.torch_epilogue_max_share:
            fatal.append(rules.violation("torch_fallback", evidence))
        else:
            warnings.append(rules.violation("torch_epilogue", evidence))
    scalar_reads = work.scalar_reads
    # The timed loop follows no storages (host time the reference does not pay), so what a scalar was
    # read from is known only in the checked calls, which decide it; a round is held to the count.
    of_inputs = 0 if timed_calls else scalar_reads - work.scalar_reads_of_kernel_data
    allowed = config.max_scalar_reads * max(timed_calls, 1)
    if device == "cuda" and of_inputs > 0:  # values of the inputs (or parameters) read on the host
        fatal.append(rules.violation("device_to_host_transfer", {"phase": phase, "scalar_reads_of_inputs": of_inputs}))
    elif scalar_reads > allowed:
        fatal.append(
            rules.violation(
                "device_to_host_transfer",
                {"phase": phase, "scalar_reads": scalar_reads, "max_scalar_reads": allowed},
                message="forward() read more scalars to the host than allowed; compute on the device with your Triton kernels",
            )
        )
    return fatal, warnings


def keep_warning(warnings: list[Violation], new: list[Violation]) -> None:
    """Add warnings, one per rule; a torch_epilogue warning keeps the largest share seen."""
    for warning in new:
        same = next((w for w in warnings if w.rule == warning.rule), None)
        if same is None:
            warnings.append(warning)
        elif warning.evidence.get("torch_share", 0) > same.evidence.get("torch_share", 0):
            warnings[warnings.index(same)] = warning


def epilogue_gpu_allowance_us(warnings: list[Violation], per_op_us: float) -> float:
    """GPU time per call the allowed epilogue's own kernels may take outside the submission's kernels."""
    for warning in warnings:
        if warning.rule == "torch_epilogue":
            return 2 * per_op_us * len(warning.evidence.get("ops") or {})  # an op launches a kernel or two
    return 0.0
