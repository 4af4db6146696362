"""Anti-cheat rules: stable ids, severity, and the message a model gets when one fires.

The ids are a public contract (the README lists them); never rename one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .models import Severity, Violation


@dataclass(frozen=True)
class Rule:
    id: str
    severity: Severity
    catches: str
    how: str
    message: str


RULES: dict[str, Rule] = {
    rule.id: rule
    for rule in (
        Rule(
            "no_triton_launch", Severity.fatal,
            "decoy kernels: a @triton.jit kernel is defined but forward never launches it",
            "hooks on Triton's launch path count launches of kernels defined in the submission, per forward call",
            "forward() did not launch any Triton kernel defined in your submission; the work must be done by your Triton kernels",
        ),
        Rule(
            "input_mutation", Severity.fatal,
            "inputs overwritten (zeroed, or computed in place)",
            "the inputs the candidate received are compared bit for bit with pristine copies in the reference process",
            "forward() modified its input tensors; inputs must be left unchanged (write results to new output tensors)",
        ),
        Rule(
            "output_aliases_input", Severity.fatal,
            "returning an input (or a view of it) as the output",
            "the storage of every returned tensor is compared with the storage of every input",
            "an output shares memory with an input; allocate a fresh output tensor (e.g. torch.empty_like) and write it with your kernel",
        ),
        Rule(
            "non_plain_output", Severity.fatal,
            "lazy outputs: tensor subclasses or non-strided tensors that compute only when compared",
            "every returned tensor must be exactly torch.Tensor with strided layout and real storage",
            "forward() returned something that is not a plain dense torch.Tensor; return ordinary tensors",
        ),
        Rule(
            "degenerate_problem", Severity.warning,
            "problems whose reference output does not depend on the inputs, so constant outputs would pass",
            "the reference output for two different random inputs is compared at the problem's tolerance",
            "the reference output barely varies with its inputs; correctness on this problem says little",
        ),
    )
}


def violation(rule_id: str, evidence: dict[str, Any] | None = None, message: str | None = None) -> Violation:
    rule = RULES[rule_id]
    return Violation(rule=rule.id, severity=rule.severity, message=message or rule.message, evidence=evidence or {})
