"""How much work torch does in a forward call, next to the submission's Triton kernels.

The op recorder (dispatch.py) hands every dispatched aten op to a `WorkMeter`. The meter counts
the bytes each compute op touches (its tensor arguments and results), the scalar reads to the
host (`.item()`, `float(t)`), and which storages hold data derived from what the kernels of this
call touched: a result computed from such a storage (a copy, a slice made contiguous, a small
epilogue) is derived too. The engine decides from these figures (worker/proportion.py); this
process only measures.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import torch

from .dispatch import ALLOCATIONS


def _tensors(value: Any) -> Iterable[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def _storage(tensor: torch.Tensor) -> int | None:
    try:
        if tensor.layout != torch.strided:
            return None
        storage = tensor.untyped_storage()
        return storage.data_ptr() if storage.nbytes() else None
    except (RuntimeError, NotImplementedError):  # meta or otherwise storage-less tensors
        return None


# Ops whose result does not depend on the values of their tensor arguments: never a derivation.
_VALUE_FREE_OPS = ALLOCATIONS | frozenset(
    {
        "arange",
        "rand",
        "rand_like",
        "randn",
        "randn_like",
        "randint",
        "randint_like",
        "randperm",
    }
)


def tensor_bytes(value: Any) -> int:
    """Bytes of the tensors in `value` (each distinct view once)."""
    seen: set[tuple[int, int, tuple[int, ...]]] = set()
    total = 0
    for tensor in _tensors(value):
        try:
            key = (tensor.data_ptr(), tensor.numel(), tuple(tensor.shape))
        except (RuntimeError, NotImplementedError):
            continue
        if key not in seen:
            seen.add(key)
            total += tensor.numel() * tensor.element_size()
    return total


class WorkMeter:
    """Per forward call: torch's compute bytes per op, scalar host reads, derived storages.

    `launches` returns the launch recorder's launches of this call so far, read at each op so data a
    kernel wrote before the op counts as that op's source.
    """

    # Per call, set by reset().
    op_bytes: Counter[str]
    op_calls: Counter[str]
    scalar_reads: int
    scalar_reads_of_kernel_data: int
    derived: set[int]
    inputs: set[int]  # the call's inputs: kernels read them, so what torch makes of them is not derived
    _kernel: set[int]
    _launches_seen: int
    _keep: list[Any]  # derived storages stay alive so their addresses are not reused

    def __init__(self, launches: Callable[[], list[Any]]) -> None:
        self._launches = launches
        self.device_type = "cpu"  # scalar reads of tensors on this device count (a CPU tensor's .item() moves nothing)
        self.candidate_file = ""  # custom ops whose body is defined there are the submission's wrappers
        self.tracking = True  # follow derived storages (off while timed: host time the reference does not pay)
        self.reset()

    def _kernel_storages(self) -> set[int]:
        launches = self._launches()
        if len(launches) < self._launches_seen:  # the recorder started a new call
            self._kernel, self._launches_seen = set(), 0
        for launch in launches[self._launches_seen :]:
            self._kernel |= launch.storages
        self._launches_seen = len(launches)
        return self._kernel

    def custom_op_body(self, func: Any) -> Callable[..., Any] | None:
        return custom_op_body(func, self.candidate_file, self.device_type) if self.candidate_file else None

    def start(self, inputs: Any) -> None:
        """A new call on these inputs."""
        self.reset()
        self.inputs = {s for s in map(_storage, _tensors(inputs)) if s is not None}

    def reset(self) -> None:
        self.op_bytes = Counter()
        self.op_calls = Counter()
        self.scalar_reads = 0
        self.scalar_reads_of_kernel_data = 0
        self.derived = set()
        self.inputs = set()
        self._kernel = set()
        self._launches_seen = 0
        self._keep = []

    def record(self, name: str, bookkeeping: bool, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> None:
        if not self.tracking and bookkeeping and name != "_local_scalar_dense":
            return  # the timed loop: no provenance (no storages are kept then), only compute and scalar reads
        if not bookkeeping:
            self.op_calls[name] += 1
            self.op_bytes[name] += tensor_bytes(args) + tensor_bytes(kwargs) + tensor_bytes(result)
        if name in _VALUE_FREE_OPS:
            return
        sources = {s for s in map(_storage, _tensors((args, kwargs))) if s is not None} - self.inputs
        from_kernels = bool(sources & (self._kernel_storages() | self.derived))
        if name == "_local_scalar_dense":
            if args and isinstance(args[0], torch.Tensor) and args[0].device.type == self.device_type:
                self.scalar_reads += 1
                self.scalar_reads_of_kernel_data += from_kernels
            return
        if from_kernels:
            for tensor in _tensors(result):
                storage = _storage(tensor)
                if storage is not None:
                    self.derived.add(storage)
                    self._keep.append(tensor.untyped_storage())

    def take(self) -> dict[str, Any]:
        """This call's figures (and a fresh start for the next call)."""
        taken = {
            "torch_ops": {name: {"calls": self.op_calls[name], "bytes": self.op_bytes[name]} for name in sorted(self.op_calls)},
            "scalar_reads": self.scalar_reads,
            "scalar_reads_of_kernel_data": self.scalar_reads_of_kernel_data,
        }
        derived = self.derived
        self.reset()
        taken["derived"] = derived
        return taken


def custom_op_body(func: Any, candidate_file: str, device_type: str) -> Callable[..., Any] | None:
    """The Python body of a `torch.library.custom_op` the submission defined, for this device. The
    op recorder runs it in place of the op, with the recorder still on: the body's torch ops and
    launches are then seen like any other (an op run normally would hide its body's torch ops below
    the recorder). None for any other op: that counts as torch compute."""
    schema = getattr(func, "_schema", None)
    if schema is None or getattr(func, "namespace", "aten") in ("aten", "prims"):
        return None
    try:
        from torch._library.custom_ops import OPDEFS
    except ImportError:
        return None
    definition = OPDEFS.get(schema.name)
    if definition is None:
        return None
    body = definition._backend_fns.get(device_type) or definition._init_fn
    code = getattr(body, "__code__", None)
    return body if code is not None and code.co_filename == candidate_file else None


def launch_bytes(launches: Iterable[Any]) -> int:
    """Bytes of the tensor arguments of the submission's own launches in one call."""
    return sum(int(getattr(launch, "nbytes", 0)) for launch in launches if launch.own)


def unwritten_outputs(outputs: Any, written: set[int], derived: set[int], scalar_from_kernels: bool) -> list[int]:
    """Output tensors whose storage no launch received and no op derived from the kernels' data. A
    one-element output made on the host from a scalar read of kernel data (`out.item() / n`) counts
    as the kernels'."""
    unwritten = []
    for index, tensor in enumerate(outputs if isinstance(outputs, (list, tuple)) else [outputs]):
        if not isinstance(tensor, torch.Tensor) or tensor.layout != torch.strided or not tensor.numel():
            continue
        storage = _storage(tensor)
        if storage in written or storage in derived or (scalar_from_kernels and tensor.numel() == 1):
            continue
        unwritten.append(index)
    return unwritten
