"""Scalar reads to the host (worker/proportion.py): in a checked call the judge knows what a scalar
was read from (the harness follows storages), so on a GPU a read of an input's value is a CPU detour
and a read of a kernel's result is a sync. The timed loop follows no storages, so a round is held to
the count alone: an honest `.item()` of a Triton reduction's result is not `cheating` there (it was,
on an H200: every timed call counted as a read of an input)."""

from __future__ import annotations

from triton_referee.sandbox.harness.messages import Work
from triton_referee.worker import proportion
from triton_referee.worker.models import EvalConfig

CONFIG = EvalConfig(device="cuda")


def rules_of(work: Work, timed_calls: int = 0) -> list[str]:
    fatal, _ = proportion.judge({}, work, "timing" if timed_calls else "trial0", CONFIG, "cuda", timed_calls)
    return [v.rule for v in fatal]


def test_a_checked_call_reading_an_input_value_is_a_detour_and_one_reading_a_kernel_result_is_not() -> None:
    assert rules_of(Work(torch_ops={}, scalar_reads=1, scalar_reads_of_kernel_data=0)) == ["device_to_host_transfer"]
    assert rules_of(Work(torch_ops={}, scalar_reads=1, scalar_reads_of_kernel_data=1)) == []


def test_a_timed_round_is_held_to_the_count_per_call_it_was_asked_for() -> None:
    per_call = CONFIG.max_scalar_reads
    assert rules_of(Work(torch_ops={}, scalar_reads=100, scalar_reads_of_kernel_data=0), timed_calls=100) == []
    assert rules_of(Work(torch_ops={}, scalar_reads=100 * per_call, scalar_reads_of_kernel_data=0), timed_calls=100) == []
    too_many = Work(torch_ops={}, scalar_reads=100 * per_call + 1, scalar_reads_of_kernel_data=0)
    assert rules_of(too_many, timed_calls=100) == ["device_to_host_transfer"]
