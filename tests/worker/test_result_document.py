"""The result document of a correct evaluation has every field docs/results.md promises."""

from __future__ import annotations

import json

import pytest

from triton_referee.worker.models import EvaluationResult, Verdict

# docs/results.md, "The document": the fields every client may rely on.
REWARD_JSON_FIELDS = [
    "id",
    "status",
    "verdict",
    "reward",
    "rewards.correctness",
    "rewards.speedup",
    "compiled",
    "correct",
    "correctness.trials",
    "correctness.passed",
    "correctness.input_sets",
    "correctness.max_abs_error",
    "correctness.max_rel_error",
    "correctness.atol",
    "correctness.rtol",
    "performance.candidate_ms",
    "performance.reference_ms",
    "performance.speedup",
    "performance.speedup_ci95",
    "performance.method",
    "performance.triton_time_fraction",
    "performance.meaningful",
    "anti_cheat.violations",
    "anti_cheat.warnings",
    "anti_cheat.triton_launches",
    "anti_cheat.kernels",
    "feedback",
    "environment.device",
    "environment.torch",
    "environment.triton",
    "environment.isolation",
    "environment.interpreter",
    "timings_ms.queued",
    "timings_ms.static",
    "timings_ms.reference",
    "timings_ms.candidate",
    "timings_ms.total",
]


@pytest.fixture(scope="module")
def document(relu_correct_result) -> dict:
    assert relu_correct_result.verdict == Verdict.correct, relu_correct_result.feedback
    return relu_correct_result.model_dump(mode="json")


@pytest.mark.parametrize("dotted", REWARD_JSON_FIELDS)
def test_reward_json_field_present(document, dotted):
    node = document
    for part in dotted.split("."):
        assert isinstance(node, dict) and part in node, f"{dotted} is missing from the result document"
        node = node[part]


def test_top_level_values(document):
    assert document["status"] == "completed"
    assert document["verdict"] == "correct"
    assert document["compiled"] is True and document["correct"] is True
    assert isinstance(document["id"], str) and document["id"]
    assert document["reward_preset"] == "tritonrl"
    assert document["error"] is None


def test_cpu_performance_is_not_meaningful_and_reward_is_correctness_only(document):
    performance = document["performance"]
    assert performance["meaningful"] is False
    assert performance["speedup"] is None
    assert performance["speedup_ci95"] is None
    assert performance["method"] == "host_clock"
    assert performance["candidate_ms"]["n"] >= 1 and performance["reference_ms"]["n"] >= 1
    assert document["rewards"] == {"correctness": 1.0, "speedup": 0.0}
    assert document["reward"] == document["rewards"]["correctness"] == 1.0


def test_anti_cheat_counts_the_candidates_launches(document):
    anti_cheat = document["anti_cheat"]
    assert anti_cheat["triton_launches"] > 0
    assert anti_cheat["kernels"] == ["relu_kernel"]
    assert anti_cheat["violations"] == []
    assert anti_cheat["foreign_kernels"] == []


def test_relu_uses_three_input_sets(document):
    correctness = document["correctness"]
    assert correctness["input_sets"] == 3
    overrides = correctness["input_set_overrides"]
    assert len(overrides) == 3
    assert overrides[0] == {}  # the original
    original = {"batch_size": 64, "dim": 2048}
    smaller, odd = overrides[1], overrides[2]
    assert set(smaller) == set(odd) == set(original)
    assert all(smaller[k] < original[k] for k in original)
    assert all(odd[k] % 2 == 1 and odd[k] < original[k] for k in original)


def test_fp32_tolerances_and_errors(document):
    correctness = document["correctness"]
    assert correctness["atol"] == pytest.approx(1e-4)
    assert correctness["rtol"] == pytest.approx(1e-4)
    # trials=2, but each of the 3 sets once, and one trial per value range (docs/judging.md)
    assert correctness["trials"] == correctness["passed"] == 3 + len(correctness["value_ranges"])
    assert correctness["max_abs_error"] == 0.0  # relu is exact
    assert correctness["max_rel_error"] == 0.0
    assert correctness["recheck_passed"] is True
    assert correctness["first_failure"] is None


def test_environment_and_timings(document):
    environment = document["environment"]
    assert environment["device"] == "cpu"
    assert environment["interpreter"] is True
    assert environment["isolation"] == "process"
    assert environment["torch"] and environment["triton"]
    timings = document["timings_ms"]
    assert timings["total"] > 0
    assert timings["reference"] > 0 and timings["candidate"] > 0
    assert timings["total"] >= timings["static"]


def test_feedback_says_speed_was_not_measured(document):
    trials = document["correctness"]["trials"]
    assert f"Correct on {trials} trials over 3 input sets" in document["feedback"]
    assert "not measured" in document["feedback"]


def test_json_round_trip(relu_correct_result):
    text = relu_correct_result.model_dump_json()
    again = EvaluationResult.model_validate_json(text)
    assert again == relu_correct_result
    assert json.loads(again.model_dump_json()) == json.loads(text)


def test_json_round_trip_of_a_failure(tiny_reference, evaluate_source):
    result = evaluate_source(tiny_reference, "")  # invalid_submission, decided statically
    assert result.verdict == Verdict.invalid_submission
    assert EvaluationResult.model_validate_json(result.model_dump_json()) == result
