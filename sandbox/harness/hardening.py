"""Input hardening (docs/judging.md): parameters drawn at random in both models, inputs in
adversarial value ranges, and the check that a problem's output depends on its inputs at all.

Both harness processes call `randomize_parameters` on their freshly built model with the same
seed. Every floating point parameter and buffer becomes `value * U(0.5, 1.5) + U(-0.1, 0.1) *
max(rms, 0.1)`: models built alike (the KernelBench convention: same seed, same layers) stay
identical, and a weight of ones or a bias of zeros stops being a constant a kernel may assume. The
noise for a tensor is keyed by its shape, dtype and rank among the tensors of that shape, so a
candidate's extra tensors do not shift the reference's.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from itertools import chain
from typing import Any

import torch

from . import compare

# Value ranges of the extra trials: name -> transform of one floating point input tensor. Each keeps
# the draw's randomness and moves it where naive kernels break.
VALUE_RANGES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "scaled": lambda x: x * 100.0,  # logits far above 88: exp overflows without the max subtraction
    "shifted": lambda x: x + 8.0,  # a large common offset: one-pass variance loses it
    "negative": lambda x: -x.abs() - 1.0,  # all negative: max initialised at 0, relu-only paths
    "near_constant": lambda x: 3.0 + 1e-3 * x,  # rows that barely vary: catastrophic cancellation
}


def _key(seed: int, *parts: object) -> int:
    digest = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


def randomize_parameters(model: Any, seed: int) -> int:
    """Redraw the floating point parameters and buffers of `model` in place; returns how many."""
    if not isinstance(model, torch.nn.Module):
        return 0
    rank: Counter[tuple[tuple[int, ...], str]] = Counter()
    done = 0
    with torch.no_grad():
        # nn.Module's own methods: a model may name an attribute `buffers` or `parameters`.
        for tensor in chain(torch.nn.Module.parameters(model), torch.nn.Module.buffers(model)):
            if not tensor.is_floating_point() or tensor.numel() == 0:
                continue
            key = (tuple(tensor.shape), str(tensor.dtype))
            generator = torch.Generator().manual_seed(_key(seed, key, rank[key]))
            rank[key] += 1
            value = tensor.detach().to("cpu", torch.float64)
            scale = torch.rand(value.shape, generator=generator, dtype=torch.float64) + 0.5
            noise = torch.rand(value.shape, generator=generator, dtype=torch.float64) * 0.2 - 0.1
            rms = float(value.pow(2).mean().sqrt()) if value.numel() else 0.0
            tensor.copy_((value * scale + noise * max(rms, 0.1)).to(tensor.device, tensor.dtype))
            done += 1
    return done


def in_domain(x: torch.Tensor, domain: Any) -> torch.Tensor:
    """Clamp into a problem's declared `INPUT_DOMAIN = (low, high)` (None for unbounded)."""
    if not domain:
        return x
    low, high = domain
    return x.clamp(min=low, max=high)


def apply_value_range(inputs: list[Any], name: str, domain: Any = None) -> list[Any]:
    """The inputs moved into a value range (floating point tensors only), inside the problem's domain.
    `domain` is one (low, high) pair for every input or a list with one per input (None: no limit)."""
    transform = VALUE_RANGES[name]
    moved = []
    for index, x in enumerate(inputs):
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            limits = domain[index] if isinstance(domain, list) and index < len(domain) else domain
            x = in_domain(transform(x.double()).to(x.dtype), limits if not isinstance(limits, list) else None)
        moved.append(x)
    return moved


def all_finite(value: Any) -> bool:
    return all(
        bool(torch.isfinite(t).all())
        for t in compare.flatten_outputs(value)
        if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex())
    )


def degenerate(outputs: list[Any], atol: float | None, rtol: float | None) -> dict[str, Any] | None:
    """Evidence that a problem's output does not depend on its inputs: every output of several
    different draws (and value ranges) equals the first at the problem's own tolerance. None when
    any differs."""
    first, others = outputs[0], outputs[1:]
    largest = 0.0
    for other in others:
        report = compare.compare_outputs(first, other, atol, rtol)
        if not report["passed"]:
            return None
        largest = max([largest] + [o.get("max_abs_error") or 0.0 for o in report["outputs"]])
    return {"draws": len(outputs), "max_abs_difference": largest}
