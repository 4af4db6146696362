"""Fuzzed candidate (and reference) sources through the engine and through the HTTP API.

Random bytes decoded every way, deep nesting, huge literals, NUL bytes, lone surrogates, a ModelNew
without Triton: every case ends with a clear verdict and an error message (or, for a reference, a
ProblemSourceError / a 4xx), never an exception escaping `evaluate` or a 5xx, and the process that
judged it keeps working: an honest evaluation afterwards is `correct`. Bad sources are refused by
the static checks, before any harness process starts (`timings_ms.start == 0`), so the examples
cost milliseconds; two honest evaluations (one in-process, one over the API) start processes.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.tiny_problem import CANDIDATE, REFERENCE
from triton_referee.service.app import create_app
from triton_referee.service.settings import Settings
from triton_referee.worker.evaluate import evaluate
from triton_referee.worker.models import MAX_SOURCE_BYTES, EvalConfig, EvaluationResult, Problem, Submission
from triton_referee.worker.static_checks import MAX_INT_DIGITS, ProblemSourceError

CONFIG = EvalConfig(device="cpu", trials=1, timeout_s=30)
STATIC = {"compile_error", "invalid_submission"}
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Candidate shapes that get through the parser but not the static checks: fuzz text put in front of
# one can only end as a static verdict, whether the fuzz parses or not.
NO_TRITON = "import torch.nn as nn\n\n\nclass ModelNew(nn.Module):\n    def forward(self, x):\n        return x * 2\n"


def _encodable(source: str) -> bool:
    try:
        source.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _judge(source: str) -> EvaluationResult | None:
    """The static verdict for `source`; None for text UTF-8 cannot encode (lone surrogates), which
    the models refuse before the engine (the API answers 422)."""
    if not _encodable(source):
        with pytest.raises(ValidationError, match="unicode"):
            Submission(source=source)
        return None
    result = evaluate(Problem(source=REFERENCE), Submission(source=source), CONFIG)
    assert result.verdict.value in STATIC, result
    assert result.error and result.error["message"] and result.feedback, result
    assert result.timings_ms.start == 0 and not result.correctness.trials, "a harness process was started"
    return result


def _nested(kind: str, depth: int) -> str:
    opening, closing = {
        "parens": ("(", ")"),
        "lists": ("[", "]"),
        "dicts": ("{1: ", "}"),
        "calls": ("f(", ")"),
        "unary": ("-", ""),
        "not": ("not ", ""),
        "lambda": ("lambda: ", ""),
        "await": ("await ", ""),
    }[kind]
    return f"x = {opening * depth}1{closing * depth}\n"


# -- the engine -------------------------------------------------------------------------------------


@FUZZ
@given(
    data=st.binary(max_size=4096),
    errors=st.sampled_from(["replace", "ignore", "surrogateescape", "backslashreplace"]),
    encoding=st.sampled_from(["utf-8", "latin-1", "cp1252"]),
)
def test_random_bytes_decoded_any_way_get_a_static_verdict(data: bytes, errors: str, encoding: str) -> None:
    _judge(data.decode(encoding, errors=errors))


@FUZZ
@given(
    kind=st.sampled_from(["parens", "lists", "dicts", "calls", "unary", "not", "lambda", "await"]),
    depth=st.integers(min_value=1, max_value=100_000),
    tail=st.sampled_from([NO_TRITON, ""]),
)
def test_deep_nesting_gets_a_static_verdict(kind: str, depth: int, tail: str) -> None:
    recursion_limit = sys.getrecursionlimit()
    result = _judge(_nested(kind, depth) + tail)
    assert result is not None and sys.getrecursionlimit() == recursion_limit
    if result.verdict.value == "compile_error":
        assert "SyntaxError" in result.error["message"] or "nested too deeply" in result.error["message"], result.error


@FUZZ
@given(text=st.text(max_size=2000), at=st.integers(min_value=0, max_value=len(CANDIDATE)))
def test_random_text_spliced_into_a_candidate_without_triton_gets_a_static_verdict(text: str, at: int) -> None:
    _judge(NO_TRITON[:at] + text + NO_TRITON[at:])


@pytest.mark.parametrize(
    "source, verdict, message",
    [
        ("x = " + "(" * 10_000 + ")" * 10_000, "compile_error", "too many nested parentheses"),
        ("x = " + "[" * 10_000 + "]" * 10_000, "compile_error", "too many nested parentheses"),
        ("x = " + "-" * 100_000 + "1", "compile_error", "nested too deeply for Python's parser"),
        ("x = f" + "()" * 100_000, "compile_error", "nested too deeply for Python's parser"),
        ("x = " + "9" * 10**6 + "\n" + CANDIDATE, "compile_error", "Exceeds the limit (4300 digits)"),
        # Parses (Python limits only decimal literals) but cannot be printed or sent as JSON: refused alike.
        ("x = 0x" + "f" * 4000 + "\n" + CANDIDATE, "compile_error", f"an integer literal over {MAX_INT_DIGITS} digits"),
        ("x = '" + "a" * 200_000 + "'\n", "invalid_submission", "does not define `class ModelNew`"),
        ("x = '" + "a" * 200_000 + "'\n" + NO_TRITON, "invalid_submission", "defines no `@triton.jit` kernel"),
        (CANDIDATE.replace("import torch\n", "import torch\x00\n"), "invalid_submission", "NUL bytes"),
        (NO_TRITON, "invalid_submission", "defines no `@triton.jit` kernel"),
        ("\n \t\n", "invalid_submission", "the candidate is empty"),
    ],
    ids=[
        "parens-10k",
        "lists-10k",
        "unary-100k",
        "calls-100k",
        "int-1e6-digits",
        "hex-int-16k-bits",
        "str-200k",
        "str-200k-no-triton",
        "nul",
        "modelnew-without-triton",
        "blank",
    ],
)
def test_nasty_candidates_get_their_verdict_and_message(source: str, verdict: str, message: str) -> None:
    result = _judge(source)
    assert result is not None and result.verdict.value == verdict and message in result.error["message"], result.error


def test_what_the_models_refuse_before_the_engine() -> None:
    with pytest.raises(ValidationError, match="at most"):  # 10 MB: over the models' hard cap (4 MiB)
        Submission(source="x = " + "9" * 10**7)
    assert _judge(CANDIDATE + "\nx = '\ud800'\n") is None  # a lone surrogate


@FUZZ
@given(
    data=st.binary(max_size=2048),
    errors=st.sampled_from(["replace", "surrogateescape"]),
    kind=st.sampled_from(["parens", "unary", "calls", "lambda"]),
    depth=st.integers(min_value=1, max_value=50_000),
)
def test_fuzzed_references_raise_problem_source_error_only(data: bytes, errors: str, kind: str, depth: int) -> None:
    # Neither can be a usable problem (the second lacks get_init_inputs), parsed or not: no process starts.
    unusable = REFERENCE.replace("def get_init_inputs", "def get_init")
    for reference in (data.decode("utf-8", errors=errors) or " ", _nested(kind, depth) + unusable):
        if not _encodable(reference):
            with pytest.raises(ValidationError, match="unicode"):
                Problem(source=reference)
            continue
        with pytest.raises(ProblemSourceError):
            evaluate(Problem(source=reference), Submission(source=CANDIDATE), CONFIG)


def test_a_reference_with_a_huge_hex_constant_is_a_problem_source_error() -> None:
    # Regression: the constant reached the input-set plan and json.dumps raised ValueError from inside
    # evaluate (after both harness processes had started); POST /v1/problems answered 500.
    with pytest.raises(ProblemSourceError, match=f"an integer literal over {MAX_INT_DIGITS} digits"):
        evaluate(Problem(source=REFERENCE.replace("n = 256", "n = 0x" + "f" * 4000)), Submission(source=CANDIDATE), CONFIG)


def test_the_engine_still_judges_an_honest_candidate() -> None:
    # Runs after the fuzzing above in this process (pytest keeps file order).
    result = evaluate(Problem(source=REFERENCE), Submission(source=CANDIDATE), CONFIG)
    assert result.verdict.value == "correct", result
    assert result.timings_ms.start > 0


# -- the API ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api() -> Iterator[TestClient]:
    # No warm pool: one full evaluation runs here (at the end). Static verdicts come back in the wait.
    with TestClient(create_app(Settings(redis_url=None, auth="off", warm_pool=False)), raise_server_exceptions=False) as client:
        yield client


def _submit(api: TestClient, candidate: str, reference: str = REFERENCE) -> dict:
    response = api.post(
        "/v1/evaluations",
        params={"wait": 30},
        content=json.dumps({"reference": reference, "candidate": candidate, "device": "cpu", "trials": 1}).encode(),
        headers={"content-type": "application/json"},
    )
    assert response.status_code < 500, response.text
    return {**response.json(), "http": response.status_code}


def _static_verdict(answer: dict) -> None:
    if answer["http"] == 422:  # a lone surrogate: refused at the door
        assert "not valid Unicode" in json.dumps(answer["detail"]), answer
        return
    assert answer["http"] == 200 and answer["verdict"] in STATIC, answer
    assert answer["error"]["message"] and answer["timings_ms"]["start"] == 0, answer


@FUZZ
@given(data=st.binary(min_size=1, max_size=1024), at=st.integers(min_value=0, max_value=40))
def test_raw_invalid_utf8_in_the_json_body_is_a_4xx(api: TestClient, data: bytes, at: int) -> None:
    body = json.dumps({"reference": REFERENCE, "candidate": "x"}).encode()
    at = body.index(b'"candidate": "') + 14 + min(at, 1)
    response = api.post(
        "/v1/evaluations", content=body[:at] + data + b"\xff" + body[at:], headers={"content-type": "application/json"}
    )
    assert response.status_code in (400, 422), response.text
    assert response.json()["detail"]


@FUZZ
@given(data=st.binary(max_size=2048), errors=st.sampled_from(["replace", "surrogateescape", "ignore"]))
def test_random_bytes_as_a_candidate_over_http_get_a_static_verdict(api: TestClient, data: bytes, errors: str) -> None:
    _static_verdict(_submit(api, data.decode("utf-8", errors=errors)))


@pytest.mark.parametrize(
    "candidate, verdict",
    [
        ("x = " + "(" * 10_000 + ")" * 10_000, "compile_error"),
        ("x = " + "-" * 100_000 + "1", "compile_error"),
        ("x = 0x" + "f" * 4000 + "\n" + CANDIDATE, "compile_error"),
        ("x = '" + "a" * 200_000 + "'\n" + NO_TRITON, "invalid_submission"),
        (CANDIDATE.replace("import torch\n", "import torch\x00\n"), "invalid_submission"),
        (NO_TRITON, "invalid_submission"),
    ],
    ids=["parens-10k", "unary-100k", "hex-int-16k-bits", "str-200k", "nul", "modelnew-without-triton"],
)
def test_nasty_candidates_over_http_get_their_verdict(api: TestClient, candidate: str, verdict: str) -> None:
    answer = _submit(api, candidate)
    _static_verdict(answer)
    assert answer["verdict"] == verdict, answer


@pytest.mark.parametrize(
    "candidate", ["x = " + "9" * 10**7, "x = '" + "a" * MAX_SOURCE_BYTES + "'"], ids=["int-1e7-digits", "str-256k"]
)
def test_sources_over_the_limit_are_a_413(api: TestClient, candidate: str) -> None:
    answer = _submit(api, candidate)
    assert answer["http"] == 413 and "the limit is 262144 bytes" in answer["detail"], answer


def test_a_reference_with_a_huge_hex_constant_is_a_422_not_a_500(api: TestClient) -> None:
    reference = REFERENCE.replace("n = 256", "n = 0x" + "f" * 4000)
    problem = api.post("/v1/problems", json={"source": reference})
    assert problem.status_code == 422 and f"an integer literal over {MAX_INT_DIGITS} digits" in problem.json()["detail"], (
        problem.text
    )
    answer = _submit(api, CANDIDATE, reference)
    assert answer["http"] == 422 and f"an integer literal over {MAX_INT_DIGITS} digits" in answer["detail"], answer


def test_the_api_still_judges_an_honest_candidate(api: TestClient) -> None:
    answer = _submit(api, CANDIDATE)
    assert answer["http"] == 200 and answer["verdict"] == "correct", answer
    assert api.get("/readyz").json()["ready"] is True
    assert api.app.state.referee.store.pending() == []
