"""Cheap checks on source text, before anything runs. They only reject what cannot work; they
are hints, never proof that a candidate is honest (source can be obfuscated)."""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass

from .models import Verdict


@dataclass(frozen=True)
class StaticFailure:
    verdict: Verdict
    message: str
    line: int | None = None


class ProblemSourceError(ValueError):
    """The reference file is not a usable KernelBench-format problem (bad input, not a verdict)."""


# Python refuses decimal integer literals over 4300 digits (its default int/str conversion limit).
# A hex, octal or binary literal of that size parses, but its value cannot be printed or sent as
# JSON (the input-set overrides, the result document): refuse it the same way.
MAX_INT_DIGITS = 4300
_MAX_INT_BITS = int(MAX_INT_DIGITS * math.log2(10))  # every int of at most this many bits has <= 4300 digits


def _huge_int(tree: ast.Module) -> tuple[int, int] | None:
    """The line and size in bits of the first integer literal over the limit."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, int) and node.value.bit_length() > _MAX_INT_BITS:
            return node.lineno, node.value.bit_length()
    return None


def _parse(source: str, what: str) -> ast.Module | StaticFailure:
    if "\x00" in source:
        return StaticFailure(Verdict.invalid_submission, f"the {what} contains NUL bytes; it is not Python source")
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        where = f"line {exc.lineno}" + (f", column {exc.offset}" if exc.offset else "")
        return StaticFailure(Verdict.compile_error, f"SyntaxError at {where}: {exc.msg}", exc.lineno)
    except (RecursionError, MemoryError) as exc:
        # CPython's parser gives up on deep nesting (`-` * 100000, `f()` * 100000, ...) with one of these.
        return StaticFailure(Verdict.compile_error, f"the {what} is nested too deeply for Python's parser ({type(exc).__name__})")
    except ValueError as exc:  # e.g. text that UTF-8 cannot encode (a lone surrogate)
        return StaticFailure(Verdict.compile_error, f"the {what} cannot be parsed: {type(exc).__name__}: {exc}")
    huge = _huge_int(tree)
    if huge is not None:
        line, bits = huge
        return StaticFailure(
            Verdict.compile_error,
            f"SyntaxError at line {line}: an integer literal over {MAX_INT_DIGITS} digits ({bits} bits)",
            line,
        )
    return tree


def _is_triton_jit(decorator: ast.expr) -> bool:
    """`@triton.jit`, `@jit`, `@triton.jit(...)`, `@triton.autotune(...)` etc. around a jit."""
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    if isinstance(target, ast.Attribute):
        return target.attr == "jit"
    return isinstance(target, ast.Name) and target.id == "jit"


def jit_functions(tree: ast.Module) -> list[str]:
    return [
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and any(_is_triton_jit(d) for d in node.decorator_list)
    ]


def defined_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.ImportFrom, ast.Import)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return names


def check_candidate(source: str) -> StaticFailure | None:
    if not source.strip():
        return StaticFailure(Verdict.invalid_submission, "the candidate is empty")
    tree = _parse(source, "candidate")
    if isinstance(tree, StaticFailure):
        return tree
    if "ModelNew" not in defined_names(tree):
        return StaticFailure(Verdict.invalid_submission, "the candidate does not define `class ModelNew` at module level")
    if not jit_functions(tree):
        return StaticFailure(
            Verdict.invalid_submission, "the candidate defines no `@triton.jit` kernel; the work must be done in Triton"
        )
    return None


def check_problem(source: str) -> ast.Module:
    """Raise ProblemSourceError unless the reference parses and defines the KernelBench names."""
    if not source.strip():
        raise ProblemSourceError("the reference is empty")
    tree = _parse(source, "reference")
    if isinstance(tree, StaticFailure):
        raise ProblemSourceError(f"the reference is not valid Python: {tree.message}")
    missing = [name for name in ("Model", "get_inputs", "get_init_inputs") if name not in defined_names(tree)]
    if missing:
        raise ProblemSourceError(f"the reference does not define {', '.join(missing)} (KernelBench format)")
    return tree


_SUSPICIOUS_CALLS = {"exec", "eval", "compile", "__import__", "_make_subclass", "as_subclass"}
_BUILTIN_CALLS = {"exec", "eval", "compile", "__import__"}
_SUSPICIOUS_MODULES = {"gc", "inspect", "ctypes", "socket", "subprocess", "signal", "multiprocessing", "threading", "_thread"}
_SUSPICIOUS_DEFS = {"__torch_function__", "__torch_dispatch__"}


def _is_launch(node: ast.AST) -> bool:
    """`kernel[grid](...)`: a call whose function is a subscript."""
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Subscript)


def suspicious_constructs(source: str) -> list[dict[str, object]]:
    """Hints only (source can be obfuscated); each with its line. Empty for unparsable source."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    found: list[dict[str, object]] = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", None)
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            # `module.eval()` or `re.compile(...)` is a method, not the builtin (unless reached through builtins).
            if (
                isinstance(node.func, ast.Attribute)
                and name in _BUILTIN_CALLS
                and not (isinstance(node.func.value, ast.Name) and node.func.value.id in ("builtins", "__builtins__"))
            ):
                name = None
            if name in _SUSPICIOUS_CALLS:
                found.append({"line": line, "construct": f"call to {name}"})
            if name == "getattr" and len(node.args) >= 2 and not isinstance(node.args[1], ast.Constant):
                found.append({"line": line, "construct": "getattr with a computed name"})
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for module in modules:
                if module.split(".")[0] in _SUSPICIOUS_MODULES:
                    found.append({"line": line, "construct": f"import of {module}"})
        elif isinstance(node, ast.FunctionDef) and node.name in _SUSPICIOUS_DEFS:
            found.append({"line": line, "construct": f"defines {node.name}"})
        elif isinstance(node, ast.Try) and node.handlers and any(_is_launch(n) for stmt in node.body for n in ast.walk(stmt)):
            found.append({"line": line, "construct": "try/except around a kernel launch (a fallback path?)"})
    return found[:50]
