"""Cheap checks on source text, before anything runs. They only reject what cannot work; they
are hints, never proof that a candidate is honest (source can be obfuscated)."""

from __future__ import annotations

import ast
from dataclasses import dataclass

from .models import Verdict


@dataclass(frozen=True)
class StaticFailure:
    verdict: Verdict
    message: str
    line: int | None = None


class ProblemSourceError(ValueError):
    """The reference file is not a usable KernelBench-format problem (bad input, not a verdict)."""


def _parse(source: str, what: str) -> ast.Module | StaticFailure:
    if "\x00" in source:
        return StaticFailure(Verdict.invalid_submission, f"the {what} contains NUL bytes; it is not Python source")
    try:
        return ast.parse(source)
    except SyntaxError as exc:
        where = f"line {exc.lineno}" + (f", column {exc.offset}" if exc.offset else "")
        return StaticFailure(Verdict.compile_error, f"SyntaxError at {where}: {exc.msg}", exc.lineno)
    except (ValueError, RecursionError, MemoryError) as exc:
        return StaticFailure(Verdict.compile_error, f"the {what} cannot be parsed: {type(exc).__name__}: {exc}")


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
