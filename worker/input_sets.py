"""Which input sets a problem is checked on.

A problem may declare them: a module-level `INPUT_SETS = [{"batch_size": 7}, ...]` of overrides
for its integer constants. Otherwise, for KernelBench files, extra sets are derived by overriding
the module-level integer constants that `get_inputs` reads (and `get_init_inputs` does not, since
the model is built once): the original, a smaller one (a quarter) and an odd-sized one.
"""

from __future__ import annotations

import ast


def _int_constants(tree: ast.Module) -> dict[str, int]:
    constants: dict[str, int] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if (
            isinstance(target, ast.Name)
            and isinstance(value, ast.Constant)
            and isinstance(value.value, int)
            and not isinstance(value.value, bool)
        ):
            constants[target.id] = value.value
    return constants


def _names_read_by(tree: ast.Module, function: str) -> set[str]:
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == function:
            return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return set()


def declared_input_sets(tree: ast.Module) -> list[dict[str, int]] | None:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "INPUT_SETS" for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as exc:
                raise ValueError("INPUT_SETS must be a literal list of {name: int} dicts") from exc
            if not isinstance(value, list) or not all(
                isinstance(item, dict)
                and all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v > 0 for k, v in item.items())
                for item in value
            ):
                raise ValueError("INPUT_SETS must be a literal list of {name: positive int} dicts")
            return value
    return None


def _smaller(value: int) -> int:
    return max(1, value // 4)


def _odd(value: int) -> int:
    """An odd size near half the original (not a power of two unless tiny)."""
    half = max(1, value // 2)
    odd = half if half % 2 else half + 1
    return odd if odd != value else max(1, value - 2)


def plan_input_sets(tree: ast.Module) -> list[dict[str, int]]:
    """Overrides for each input set; the first is always the original ({})."""
    declared = declared_input_sets(tree)
    if declared is not None:
        return [{}] + [item for item in declared if item]
    sizes = {
        name: value
        for name, value in _int_constants(tree).items()
        if name in _names_read_by(tree, "get_inputs") - _names_read_by(tree, "get_init_inputs") and value > 2
    }
    if not sizes:
        return [{}]
    return [{}, {n: _smaller(v) for n, v in sizes.items()}, {n: _odd(v) for n, v in sizes.items()}]
