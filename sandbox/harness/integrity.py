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
import ctypes
import sys
import time
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from gc import get_referents as _referents
from itertools import chain, repeat
from operator import is_
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
    return isinstance(
        value,
        (
            types.FunctionType,
            types.BuiltinFunctionType,
            types.MethodDescriptorType,
            types.WrapperDescriptorType,
            types.MethodWrapperType,
            types.ClassMethodDescriptorType,
            type,
            staticmethod,
            classmethod,
            property,
            types.GetSetDescriptorType,
        ),
    )


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
_key = object.__hash__  # an object's identity as a number; unlike id(), raises no audit event (the hook sees every one)


def _item_array_offset() -> int | None:
    """Where a list keeps the address of its item array (after the reference count, the type and the
    size in CPython's usual build), checked against `id()` on a probe; None elsewhere."""
    offset, probe = 3 * _POINTER, [object(), object(), None]
    try:
        items = ctypes.c_void_p.from_address(id(probe) + offset).value
        found = ctypes.string_at(items, len(probe) * _POINTER) if items else b""
    except (OSError, ValueError):
        return None
    return offset if found == b"".join(id(value).to_bytes(_POINTER, sys.byteorder) for value in probe) else None


_POINTER = ctypes.sizeof(ctypes.c_void_p)
_ITEMS = _item_array_offset()


class _Identities:
    """The identities of a list of objects, compared in one step: the bytes of the list's item array
    (the objects' addresses; the objects are held, so no address is reused), or, where the layout is
    not known, `operator.is_` element by element. Never `==`: a replacement may define `__eq__`."""

    def __init__(self, values: list[Any]) -> None:
        self.values = values
        self.addresses = _addresses(values)

    def same(self, values: list[Any]) -> bool:
        if len(values) != len(self.values):
            return False
        if self.addresses is not None:
            return _addresses(values) == self.addresses
        return all(map(is_, values, self.values))


def _addresses(values: list[Any]) -> bytes | None:
    if _ITEMS is None:
        return None
    if not values:
        return b""
    items = ctypes.c_void_p.from_address(id(values) + _ITEMS).value
    return ctypes.string_at(items, len(values) * _POINTER) if items is not None else None


def _slices(values: list[Any]) -> Callable[[int], list[Any]]:
    """Consecutive pieces of `values`: each call takes the next `count`."""
    start = 0

    def take(count: int) -> list[Any]:
        nonlocal start
        start += count
        return values[start - count : start]

    return take


def _looked_up(namespace: Mapping[str, Any], names: Sequence[str]) -> Iterator[Any]:
    return map(namespace.get, names, repeat(_ABSENT))


def _flat(namespaces: Iterable[Mapping[str, Any]], names: Iterable[Sequence[str]]) -> list[Any]:
    """The value of each name in each namespace (_ABSENT where missing), in one list, built in C."""
    return list(chain.from_iterable(map(_looked_up, namespaces, names)))


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
    found: list[types.FunctionType] = []
    while isinstance(value, types.FunctionType) and len(found) < 8:  # a wrapper and what it wraps
        found.append(value)
        value = getattr(value, "__wrapped__", None)
    return found


_DATA = (type(None), bool, int, float, str, bytes, tuple)  # plain values, not behaviour


class _Namespace:
    """The names recorded in one namespace dict: name -> the value bound then (or _ABSENT), and which
    of them are modules (followed again with each function's names)."""

    __slots__ = ("absent", "bound", "label", "modules", "namespace")

    def __init__(self, label: str, namespace: dict[str, Any]) -> None:
        self.label, self.namespace = label, namespace
        self.bound: dict[str, Any] = {}
        self.modules: set[str] = set()
        self.absent: set[str] = set()

    def bind(self, names: set[str]) -> tuple[list[Any], list[Any]]:
        """(values of the names bound now for the first time, modules bound before among the names)."""
        bound, namespace = self.bound, self.namespace
        again = [bound[name] for name in names & self.modules]
        fresh = []
        for name in names.difference(bound):  # (iterates `names`; `names - bound.keys()` copies the dict)
            value = bound[name] = namespace.get(name, _ABSENT)
            if isinstance(value, types.ModuleType):
                self.modules.add(name)
            elif value is _ABSENT:
                self.absent.add(name)
            fresh.append(value)
        return fresh, again


class _Reach:
    """The functions, classes and name bindings reachable from the harness's code."""

    def __init__(self) -> None:
        self.namespaces: dict[int, _Namespace] = {}  # key of a namespace dict -> what is recorded there
        self.functions: dict[types.FunctionType, None] = {}  # ordered; functions hash by identity
        self.classes: dict[int, type] = {}
        self._pending: list[types.FunctionType] = []

    def record(self, label: str, namespace: dict[str, Any]) -> _Namespace:
        found = self.namespaces.get(_key(namespace))
        if found is None:
            found = self.namespaces[_key(namespace)] = _Namespace(label, namespace)
        return found

    def visit(self, value: Any, names: set[str], depth: int = 0) -> None:
        if isinstance(value, types.ModuleType):
            if depth < 4:  # a module's names are followed as far as the function's own names lead
                namespace = vars(value)
                fresh, again = self.record(value.__name__, namespace).bind(namespace.keys() & names)
                for found in fresh + again:
                    self.visit(found, names, depth + 1)
        elif isinstance(value, type):
            self.add_class(value)
        else:
            for function in _functions_of(value):
                self.add_function(function)

    def add_class(self, klass: type) -> None:
        for base in klass.__mro__:
            if _key(base) in self.classes or base in (object, type):
                continue
            self.classes[_key(base)] = base
            for value in list(vars(base).values()):
                for function in _functions_of(value):
                    self.add_function(function)

    def add_function(self, function: types.FunctionType) -> None:
        if function not in self.functions and len(self.functions) < _MAX_FUNCTIONS:
            self.functions[function] = None
            self._pending.append(function)

    def run(self) -> None:
        """Each pending function's names: in its globals, else in builtins (recorded missing from the
        globals too: a global added later would shadow the builtin)."""
        builtin_names = self.record("builtins", vars(builtins))
        while self._pending:
            function = self._pending.pop()
            names = _code_names(function.__code__)
            namespace = function.__globals__
            record = self.record(str(namespace.get("__name__", "?")), namespace)
            fresh, again = record.bind(names)
            builtin_fresh, builtin_again = builtin_names.bind(names & record.absent)
            fresh += builtin_fresh
            again += builtin_again
            for value in fresh + again:
                if value is not _ABSENT:
                    self.visit(value, names)


class IntegritySnapshot:
    """Taken once before the candidate is imported; `changes()` after every phase. Each part is
    compared in one step (`_Identities`), and looked at name by name only where that finds a
    difference: the audit hook sees every `id()` and every read of a function's `__code__`, and this
    runs after every call of the candidate, so the common case raises almost no events."""

    def __init__(self) -> None:
        self._objects = _critical_objects()
        # The fixed list: owner name -> the names recorded (their values are in self._fixed_identities).
        self._fixed: dict[str, tuple[str, ...]] = {}
        fixed_values: list[Any] = []
        for owner_name, owner in self._objects.items():
            harness_module = isinstance(owner, types.ModuleType) and owner_name.startswith(f"{__package__}")
            # Harness modules: every module-level name counts (swapping `tensors` for a fake is tampering).
            kept = {
                attr: value
                for attr, value in _resolved(owner).items()
                if _is_code(value) or (harness_module and not attr.startswith("__"))
            }
            self._fixed[owner_name] = tuple(kept)
            fixed_values += kept.values()
        self._fixed_identities = _Identities(fixed_values)
        reach = _Reach()
        for owner_name, owner in self._objects.items():
            if owner_name.startswith(f"{__package__}") and isinstance(owner, (types.ModuleType, type)):
                for value in list(vars(owner).values()):
                    if getattr(value, "__module__", None) == getattr(owner, "__name__", owner_name) or isinstance(owner, type):
                        reach.visit(value, set())
        reach.run()
        self._bindings = [(record.label, record.namespace, tuple(record.bound)) for record in reach.namespaces.values()]
        self._binding_namespaces = [namespace for _, namespace, _ in self._bindings]
        self._binding_names = [names for _, _, names in self._bindings]
        self._binding_identities = _Identities([value for record in reach.namespaces.values() for value in record.bound.values()])
        self._functions = tuple(reach.functions)
        self._code = [(f.__code__, f.__defaults__, f.__kwdefaults__) for f in self._functions]
        self._referents = _Identities(_referents(*self._functions))  # code, defaults, globals, name, dict... of each, in order
        self._classes = tuple(reach.classes.values())
        self._class_names = [tuple(vars(klass)) for klass in self._classes]
        self._class_sizes = [len(names) for names in self._class_names]  # grows by new names found harmless
        self._class_identities = _Identities([value for klass in self._classes for value in vars(klass).values()])

    def changes(self) -> list[str]:
        changed = []
        current = {owner_name: _resolved(owner) for owner_name, owner in self._objects.items()}
        if not self._fixed_identities.same(_flat(map(current.__getitem__, self._fixed), self._fixed.values())):
            changed += self._fixed_changes(current)
        if not self._binding_identities.same(_flat(self._binding_namespaces, self._binding_names)):
            changed += self._binding_changes()
        referents = _referents(*self._functions)
        if not self._referents.same(referents):
            rewritten = [
                f"{f.__module__}.{f.__qualname__}: code or defaults were rewritten"
                for f, recorded in zip(self._functions, self._code, strict=True)
                if not all(map(is_, (f.__code__, f.__defaults__, f.__kwdefaults__), recorded))
            ]
            if not rewritten:
                self._referents = _Identities(referents)  # something else changed (a docstring, a new __dict__): look once
            changed += rewritten
        namespaces = list(map(vars, self._classes))
        if list(map(len, namespaces)) != self._class_sizes or not self._class_identities.same(
            _flat(namespaces, self._class_names)
        ):
            changed += self._class_changes(namespaces)
        return sorted(set(changed))

    def _fixed_changes(self, current: dict[str, dict[str, Any]]) -> list[str]:
        changed, values = [], _slices(self._fixed_identities.values)
        for owner_name, attrs in self._fixed.items():
            for attr, value in zip(attrs, values(len(attrs)), strict=True):
                if attr not in current[owner_name]:
                    changed.append(f"{owner_name}.{attr} was removed")
                elif current[owner_name][attr] is not value:
                    changed.append(f"{owner_name}.{attr} was replaced")
        return changed

    def _binding_changes(self) -> list[str]:
        changed, values = [], _slices(self._binding_identities.values)
        for label, namespace, names in self._bindings:
            for name, value in zip(names, values(len(names)), strict=True):
                now = namespace.get(name, _ABSENT)
                if now is value or (isinstance(now, _DATA) and value is not _ABSENT):
                    continue  # a module's cached value (torch.cuda._cached_device_count is set at CUDA's start)
                changed.append(f"{label}.{name} was " + ("added" if value is _ABSENT else "replaced"))
        return changed

    def _class_changes(self, namespaces: Sequence[Mapping[str, Any]]) -> list[str]:
        changed, values = [], _slices(self._class_identities.values)
        for index, (klass, now, names) in enumerate(zip(self._classes, namespaces, self._class_names, strict=True)):
            label = f"{klass.__module__}.{klass.__qualname__}"
            found = []
            for name, value in zip(names, values(len(names)), strict=True):
                if name not in now:
                    found.append(f"{label}.{name} was removed")
                elif now[name] is not value:
                    found.append(f"{label}.{name} was replaced")
            added = now.keys() - set(names)
            if added:
                inherited = {name for base in klass.__mro__[1:] for name in vars(base)}
                found += [f"{label}.{name} was added" for name in added if name.startswith("__") or name in inherited]
            if not found:
                self._class_sizes[index] = len(now)  # torch adds attributes lazily: look only once
            changed += found
        return changed
