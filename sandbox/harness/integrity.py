"""Integrity of the objects that measure and compare, and of everything the harness's code calls.

Before the candidate is imported, the identity of every function and class reachable as an
attribute of the critical objects is recorded; after import and after every phase it is checked
again. Audit hooks do not see attribute assignment (`time.perf_counter = ...`,
`torch.cuda.Event.elapsed_time = ...`), the snapshot does. New attributes are allowed (torch
adds some lazily); a changed or removed one is tampering.

A fixed list is not enough: the recorder's `with` block calls module-level functions of torch
(`_push_mode`), its report calls stdlib methods (`Counter.items`, inherited from `dict`). So the
snapshot also follows the harness's code: from every function and class the harness defines, the
names each function's code looks up (in its module's globals, then through the modules and
classes they name), transitively, and records for each: the binding of every such name (a
missing one too: a global added later shadows the builtin of that name), every function's code,
defaults and keyword defaults (rewriting `__code__` in place keeps the identity), and every
class's own attributes, where a new one that shadows an inherited attribute or is a dunder counts
as tampering (`Counter.items = ...` adds to the class, it replaces nothing).
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


_ABSENT = object()
_MAX_FUNCTIONS = 30000


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def _functions_of(value: Any) -> list[types.FunctionType]:
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    if isinstance(value, property):
        return [f for f in (value.fget, value.fset, value.fdel) if isinstance(f, types.FunctionType)]
    found = []
    while isinstance(value, types.FunctionType) and len(found) < 8:  # a wrapper and what it wraps
        found.append(value)
        value = getattr(value, "__wrapped__", None)
    return found


_DATA = (type(None), bool, int, float, str, bytes, tuple)  # plain values, not behaviour


class _Reach:
    """The functions, classes and name bindings reachable from the harness's code."""

    def __init__(self) -> None:
        self.bindings: dict[tuple[int, str], int] = {}  # (id of a namespace dict, name) -> id of its value
        self.namespaces: dict[int, tuple[str, dict[str, Any]]] = {}
        self.functions: dict[int, types.FunctionType] = {}
        self.classes: dict[int, type] = {}
        self._pending: list[types.FunctionType] = []

    def bind(self, label: str, namespace: dict[str, Any], name: str) -> Any:
        self.namespaces.setdefault(id(namespace), (label, namespace))
        value = namespace.get(name, _ABSENT)
        self.bindings[(id(namespace), name)] = id(value)
        return value

    def visit(self, value: Any, names: set[str], depth: int = 0) -> None:
        if isinstance(value, types.ModuleType) and depth < 4:
            namespace = vars(value)
            for name in names:
                if name in namespace:
                    self.visit(self.bind(value.__name__, namespace, name), names, depth + 1)
        elif isinstance(value, type):
            self.add_class(value)
        else:
            for function in _functions_of(value):
                self.add_function(function)

    def add_class(self, klass: type) -> None:
        for base in klass.__mro__:
            if id(base) in self.classes or base in (object, type):
                continue
            self.classes[id(base)] = base
            for value in list(vars(base).values()):
                for function in _functions_of(value):
                    self.add_function(function)

    def add_function(self, function: types.FunctionType) -> None:
        if id(function) not in self.functions and len(self.functions) < _MAX_FUNCTIONS:
            self.functions[id(function)] = function
            self._pending.append(function)

    def run(self) -> None:
        builtin_namespace = vars(builtins)
        while self._pending:
            function = self._pending.pop()
            names = _code_names(function.__code__)
            namespace = function.__globals__
            label = str(namespace.get("__name__", "?"))
            for name in names:
                value = self.bind(label, namespace, name)
                if value is _ABSENT:
                    value = self.bind("builtins", builtin_namespace, name)
                if value is not _ABSENT:
                    self.visit(value, names)


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
        self._reach = _Reach()
        for owner_name, owner in self._objects.items():
            if owner_name.startswith(f"{__package__}") and isinstance(owner, (types.ModuleType, type)):
                for value in list(vars(owner).values()):
                    if getattr(value, "__module__", None) == getattr(owner, "__name__", owner_name) or isinstance(owner, type):
                        self._reach.visit(value, set())
        self._reach.run()
        self._code = {key: (id(f.__code__), id(f.__defaults__), id(f.__kwdefaults__)) for key, f in self._reach.functions.items()}
        self._class_attrs = {key: {name: id(value) for name, value in vars(klass).items()}
                             for key, klass in self._reach.classes.items()}
        self._inherited = {key: {name for base in klass.__mro__[1:] for name in vars(base)}
                           for key, klass in self._reach.classes.items()}

    def changes(self) -> list[str]:
        changed = []
        current = {name: _resolved(owner) for name, owner in self._objects.items()}
        for (owner_name, attr), identity in self._ids.items():
            if attr not in current[owner_name]:
                changed.append(f"{owner_name}.{attr} was removed")
            elif id(current[owner_name][attr]) != identity:
                changed.append(f"{owner_name}.{attr} was replaced")
        reach = self._reach
        for (namespace_id, name), identity in reach.bindings.items():
            label, namespace = reach.namespaces[namespace_id]
            value = namespace.get(name, _ABSENT)
            if isinstance(value, _DATA) and identity != id(_ABSENT):
                continue  # a module's cached value (torch.cuda._cached_device_count is set at CUDA's start)
            if id(value) != identity:
                changed.append(f"{label}.{name} was " + ("added" if identity == id(_ABSENT) else "replaced"))
        for key, function in reach.functions.items():
            if (id(function.__code__), id(function.__defaults__), id(function.__kwdefaults__)) != self._code[key]:
                changed.append(f"{function.__module__}.{function.__qualname__}: code or defaults were rewritten")
        for key, klass in reach.classes.items():
            recorded, now = self._class_attrs[key], vars(klass)
            for name, identity in recorded.items():
                if name not in now:
                    changed.append(f"{klass.__module__}.{klass.__qualname__}.{name} was removed")
                elif id(now[name]) != identity:
                    changed.append(f"{klass.__module__}.{klass.__qualname__}.{name} was replaced")
            for name in now.keys() - recorded.keys():
                if name.startswith("__") or name in self._inherited[key]:
                    changed.append(f"{klass.__module__}.{klass.__qualname__}.{name} was added")
        return sorted(set(changed))
