"""Records every aten op the candidate dispatches during forward (the PyTorch-fallback check).

Ops fall in two classes. Bookkeeping (allocation, views and reshapes, copies, dtype casts, fills)
is what honest Triton wrappers do around a launch. Everything else computes, and compute done by
torch instead of the submission's Triton kernels is a fallback. Ops issued while a Triton launch is
in progress are recorded too: the interpreter's own (allocations and copies) are all bookkeeping,
and a compiled launch dispatches none, while pausing there would hide torch work done inside a
grid callable.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# aten overload packets (names without the overload) that only make views and reshapes.
_VIEWS = frozenset(
    {
        "view",
        "_unsafe_view",
        "reshape",
        "_reshape_alias",
        "as_strided",
        "alias",
        "detach",
        "t",
        "transpose",
        "permute",
        "expand",
        "squeeze",
        "unsqueeze",
        "slice",
        "select",
        "narrow",
        "split",
        "split_with_sizes",
        "chunk",
        "unbind",
        "flatten",
        "unflatten",
        "view_as",
        "movedim",
        "diagonal",
        "unfold",
    }
)

# Ops that make a new tensor from shapes and constants alone (work.py: never a derivation either).
ALLOCATIONS = frozenset(
    {
        "empty",
        "empty_like",
        "empty_strided",
        "empty_permuted",
        "new_empty",
        "new_empty_strided",
        "zeros",
        "zeros_like",
        "new_zeros",
        "ones",
        "ones_like",
        "new_ones",
        "full",
        "full_like",
        "new_full",
        "scalar_tensor",
    }
)

# ... that only allocate, view, copy or cast.
BOOKKEEPING_OPS = (
    _VIEWS
    | ALLOCATIONS
    | frozenset(
        {
            # fills
            "zero_",
            "fill_",
            "lift_fresh",
            "lift_fresh_copy",
            "resize_",
            "set_",
            "arange",
            # copies and casts
            "copy_",
            "clone",
            "_to_copy",
            "contiguous",
            "_copy_from",
            "_copy_from_and_resize",
            "_local_scalar_dense",  # .item(): a copy to the host, counted below when the source is on a GPU
        }
    )
)

# Ops that only make views or read: they cannot have written an output (`.numpy()` dispatches `detach`).
VIEW_OPS = _VIEWS | {"_local_scalar_dense", "lift_fresh"}


def op_name(func: Any) -> str:
    """`relu` for aten ops; `namespace::name` for any other namespace (a custom op named `clone` is
    not the bookkeeping op `clone`)."""
    packet = getattr(func, "overloadpacket", None)
    name = str(packet.__name__ if packet is not None else func).removeprefix("aten.")
    namespace = getattr(func, "namespace", "aten")
    return name if namespace == "aten" else f"{namespace}::{name}"


class OpRecorder(TorchDispatchMode):
    """Counts dispatched ops and device-to-host copies."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # Otherwise torch wraps __torch_dispatch__ so that its first call imports torch._dynamo
        # (1.5 s per candidate process); this mode never runs under torch.compile.
        return False

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()
        self.device_to_host: int = 0
        self.meter: Any = None  # a work.WorkMeter, set by the candidate role
        self.taken: Counter[str] = Counter()
        self.sequence = 0  # ops that can write, dispatched so far, never reset (orders them against launches)

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        body = self.meter.custom_op_body(func) if self.meter is not None else None
        if body is not None:  # the submission's torch.library.custom_op: its body runs watched, in place of the op
            with self:
                return body(*args, **kwargs)
        name = op_name(func)
        self.ops[name] += 1
        if name not in VIEW_OPS:
            self.sequence += 1
        # A scalar read (`.item()`) is not a data copy: the work meter counts it (worker/proportion.py judges).
        if name in ("_to_copy", "copy_", "_copy_from") and _moves_to_host(name, args, kwargs):
            self.device_to_host += 1
        result = func(*args, **kwargs)
        if self.meter is not None:
            self.meter.record(name, name in BOOKKEEPING_OPS, args, kwargs, result)
        return result

    def clock(self) -> int:
        return self.sequence

    def take(self) -> tuple[Counter[str], int]:
        ops, transfers = self.ops, self.device_to_host
        self.taken += ops  # what the op witness compares with (witness.py), until it takes it
        self.ops, self.device_to_host = Counter(), 0
        return ops, transfers


def _moves_to_host(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """A copy whose source is on a GPU and whose destination is the CPU."""
    if name == "_local_scalar_dense":
        return bool(args) and isinstance(args[0], torch.Tensor) and args[0].is_cuda
    if name == "_to_copy":
        source = args[0] if args else None
        target = kwargs.get("device")
        return isinstance(source, torch.Tensor) and source.is_cuda and target is not None and torch.device(target).type == "cpu"
    if len(args) >= 2 and isinstance(args[0], torch.Tensor) and isinstance(args[1], torch.Tensor):
        destination, source = (args[0], args[1]) if name == "copy_" else (args[1], args[0])
        return source.is_cuda and destination.device.type == "cpu"
    return False


def compute_ops(ops: Counter[str], allowed: frozenset[str] = frozenset()) -> dict[str, int]:
    """Compute among the recorded ops. Ops of other namespaces (custom ops) are containers: the mode
    cannot see into them; the op witness (witness.py) judges what their bodies run."""
    return {
        name: count
        for name, count in sorted(ops.items())
        if "::" not in name and name not in BOOKKEEPING_OPS and name not in allowed
    }
