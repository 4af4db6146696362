"""Integrity of the objects that measure and compare.

Before the candidate is imported, the identity of every function and class reachable as an
attribute of the critical objects is recorded; after import and after every phase it is checked
again. Audit hooks do not see attribute assignment (`time.perf_counter = ...`,
`torch.cuda.Event.elapsed_time = ...`), the snapshot does. New attributes are allowed (torch
adds some lazily); a changed or removed one is tampering.
"""

from __future__ import annotations

import builtins
import sys
import time
import types
from typing import Any


def _critical_objects() -> dict[str, Any]:
    import _thread
    import threading

    import torch.nn.functional
    import torch.testing
    import triton.testing
    from triton.runtime.jit import JITFunction

    objects: dict[str, Any] = {
        "builtins": builtins,
        "_thread": _thread,
        "threading": threading,
        "time": time,
        "torch": torch,
        "torch.Tensor": torch.Tensor,
        "torch.nn.Module": torch.nn.Module,
        "torch.nn.functional": torch.nn.functional,
        "torch.testing": torch.testing,
        "torch.cuda": torch.cuda,
        "torch.cuda.Event": torch.cuda.Event,
        "torch.cuda.Stream": torch.cuda.Stream,
        "triton": triton,
        "triton.testing": triton.testing,
        "triton.JITFunction": JITFunction,
    }
    try:
        from triton.runtime.interpreter import InterpretedFunction

        objects["triton.InterpretedFunction"] = InterpretedFunction
    except ImportError:
        pass
    # The harness itself: its modules and the classes they define (the candidate shares the process).
    for name, module in list(sys.modules.items()):
        if name == __package__ or name.startswith(f"{__package__}."):
            objects[name] = module
            for value in vars(module).values():
                if isinstance(value, type) and value.__module__ == name:
                    objects[f"{name}.{value.__qualname__}"] = value
    return objects


def _is_code(value: Any) -> bool:
    return isinstance(value, (types.FunctionType, types.BuiltinFunctionType, types.MethodDescriptorType,
                              types.WrapperDescriptorType, types.MethodWrapperType, types.ClassMethodDescriptorType,
                              type, staticmethod, classmethod, property, types.GetSetDescriptorType))


def _resolved(owner: Any) -> dict[str, Any]:
    """Attribute name -> the object lookup finds: for classes through the MRO, so assigning an
    attribute that shadows an inherited one (`torch.Tensor.__eq__ = ...`) counts as a change."""
    if isinstance(owner, type):
        found: dict[str, Any] = {}
        for klass in reversed(owner.__mro__):
            found.update(vars(klass))
        return found
    return dict(vars(owner))


class IntegritySnapshot:
    def __init__(self) -> None:
        self._objects = _critical_objects()
        self._ids: dict[tuple[str, str], int] = {}
        self._keep: list[Any] = []  # holding references keeps ids from being reused
        for owner_name, owner in self._objects.items():
            harness_module = isinstance(owner, types.ModuleType) and owner_name.startswith(f"{__package__}")
            for attr, value in _resolved(owner).items():
                # Harness modules: every module-level name counts (swapping `tensors` for a fake is tampering).
                if _is_code(value) or (harness_module and not attr.startswith("__")):
                    self._ids[(owner_name, attr)] = id(value)
                    self._keep.append(value)

    def changes(self) -> list[str]:
        changed = []
        current = {name: _resolved(owner) for name, owner in self._objects.items()}
        for (owner_name, attr), identity in self._ids.items():
            if attr not in current[owner_name]:
                changed.append(f"{owner_name}.{attr} was removed")
            elif id(current[owner_name][attr]) != identity:
                changed.append(f"{owner_name}.{attr} was replaced")
        return changed
