"""The client and the RL adapters (verl, TRL, OpenRLHF) against a real embedded server; every
evaluation runs for real on the CPU interpreter."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import pytest

from tests.integrations.integration_support import CANDIDATE, CHEAT, COMPILE_ERROR, FAST, REFERENCE, WRONG, completion
from triton_referee.service.client import ApiError, AsyncRefereeClient, RefereeClient
from triton_referee.service.integrations import openrlhf, trl, verl
from triton_referee.worker.models import EvaluationResult, Verdict


@pytest.fixture(autouse=True)
def _referee_env(server_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFEREE_URL", server_url)
    monkeypatch.setenv("REFEREE_OPTIONS", json.dumps(FAST))
    monkeypatch.delenv("REFEREE_API_KEY", raising=False)
    monkeypatch.delenv("REFEREE_SERVER", raising=False)


def test_client_evaluate_and_evaluate_many_return_typed_results(server_url: str) -> None:
    with RefereeClient(server_url) as client:
        result = client.evaluate(REFERENCE, CANDIDATE, **FAST)
        assert isinstance(result, EvaluationResult)
        assert result.verdict == Verdict.correct and result.reward == 1.0, result.feedback
        bodies = [
            {"reference": REFERENCE, "candidate": CANDIDATE, **FAST},  # identical: answered by dedup
            {"reference": REFERENCE, "candidate": WRONG, **FAST},
            {"reference": REFERENCE, "candidate": "import torch\n", **FAST},  # no ModelNew: static rejection
            {"reference": "not python (", "candidate": CANDIDATE},
        ]  # the server refuses it: 422
        seen: list[int] = []
        results = client.evaluate_many(bodies, concurrency=2, on_result=lambda i, r: seen.append(i))
    assert [r.verdict for r in results] == [
        Verdict.correct,
        Verdict.incorrect,
        Verdict.invalid_submission,
        Verdict.infrastructure_error,
    ]
    assert sorted(seen) == [0, 1, 2, 3]
    assert results[0].id == result.id  # the duplicate got the same evaluation
    assert results[3].error["kind"] == "rejected" and results[3].error["status"] == 422  # refused: no reward, and why
    assert "not a usable problem" in results[3].error["message"]
    wrong = results[1]
    # Mismatch statistics and where the error is largest, in the feedback.
    assert "Largest error at index" in wrong.feedback and "Passed 0 of 1 trials" in wrong.feedback
    assert "max abs error" in wrong.feedback


def test_async_client_evaluates_many_with_bounded_concurrency(server_url: str) -> None:
    async def run() -> list[EvaluationResult]:
        async with AsyncRefereeClient(server_url) as client:
            return await client.evaluate_many(
                [
                    {"reference": REFERENCE, "candidate": CANDIDATE, **FAST},
                    {"reference": REFERENCE, "candidate": "import torch\n", **FAST},
                ],
                concurrency=1,
            )

    results = asyncio.run(run())
    assert [r.verdict for r in results] == [Verdict.correct, Verdict.invalid_submission]


def test_client_retries_connection_errors_then_raises() -> None:
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    with RefereeClient(f"http://127.0.0.1:{port}", retries=3, backoff=0.05) as client, pytest.raises(httpx.ConnectError):
        client.evaluate(REFERENCE, CANDIDATE)
    assert time.monotonic() - started >= 0.05 * (0.5 + 1 + 2) / 2  # three backoffs were slept


def test_client_raises_api_error_for_a_refused_request(server_url: str) -> None:
    with RefereeClient(server_url) as client, pytest.raises(ApiError) as caught:
        client.evaluate("x = 1", CANDIDATE)
    assert caught.value.status == 422 and "not a usable problem" in caught.value.detail


def test_verl_compute_score_returns_score_and_components() -> None:
    scored = verl.compute_score("kernelbench", completion(CANDIDATE), REFERENCE)
    assert scored["score"] == 1.0 and scored["correct"] == 1.0 and scored["verdict"] == "correct", scored
    assert set(scored) >= {"score", "correctness", "speedup", "compiled", "cheating", "feedback"}
    # The kernel uses an undefined name: compile_error, and the feedback quotes the offending kernel line.
    broken = verl.compute_score("kernelbench", completion(COMPILE_ERROR), json.dumps({"reference": REFERENCE}))
    assert broken["verdict"] == "compile_error" and broken["score"] == 0.0, broken
    assert "scale" in broken["feedback"] and "In your code:" in broken["feedback"]
    assert "tl.load(x_ptr + offs, mask=mask) * scale" in broken["feedback"]
    # Prose without code never reaches the server.
    empty = verl.compute_score("kernelbench", "<think>hmm</think> I could not do it.", REFERENCE)
    assert empty["verdict"] == "invalid_submission" and empty["score"] == 0.0
    assert "no Python code found" in empty["feedback"]
    batch = verl.compute_score_batch(["kb", "kb"], [completion(CANDIDATE), "no code"], [REFERENCE, REFERENCE], [None, None])
    assert [b["score"] for b in batch] == [1.0, 0.0]


def test_verl_reads_the_server_from_extra_info(server_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFEREE_URL", "http://127.0.0.1:9")  # wrong on purpose: extra_info wins
    scored = verl.compute_score("kb", completion(CANDIDATE), REFERENCE, {"referee": {"url": server_url, "options": FAST}})
    assert scored["score"] == 1.0


def test_trl_reward_function_scores_standard_and_conversational_completions() -> None:
    reward = trl.make_reward_function(reference_column="reference")
    assert reward.__name__ == "referee_reward"
    completions = [completion(CANDIDATE), [{"role": "assistant", "content": completion(CHEAT)}], "no code at all"]
    rewards = reward(completions, prompts=["p"] * 3, reference=[REFERENCE] * 3)
    assert rewards == [1.0, -1.0, 0.0]  # correct, cheating (default penalty), no code
    assert trl.referee_reward([completion(CANDIDATE)], reference=[REFERENCE]) == [1.0]
    with pytest.raises(KeyError, match="no 'reference' column"):
        reward(["x"], problem=[REFERENCE])


def test_openrlhf_endpoint_scores_queries_with_labels_or_the_prompt(server_url: str) -> None:
    prompt = f"Optimise this with Triton:\n\n```python\n{REFERENCE}```\n\nAnswer:"
    body = {
        "query": [prompt + completion(CANDIDATE), prompt + "I give up.", prompt + completion(WRONG)],
        "prompts": [prompt] * 3,
        "options": FAST,
    }
    response = httpx.post(f"{server_url}/v1/openrlhf/reward", json=body, timeout=300)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["rewards"] == [1.0, 0.0, 0.0] and answer["scores"] == [1.0, 0.0, 0.0]
    assert answer["verdicts"] == ["correct", "invalid_submission", "incorrect"]
    # OpenRLHF makes a tensor of every extra_logs value: numbers only.
    assert all(isinstance(v, float) for values in answer["extra_logs"].values() for v in values), answer["extra_logs"]
    assert answer["extra_logs"]["correct"] == [1.0, 0.0, 0.0] and answer["extra_logs"]["no_code"] == [0.0, 1.0, 0.0]
    assert "Largest error at index" in answer["feedback"][2]
    # Labels name the problem; a label the server refuses fails the request with its reason (no made-up 0).
    labelled = httpx.post(
        f"{server_url}/v1/openrlhf/reward",
        timeout=300,
        json={
            "query": ["q" + completion(CANDIDATE), "q" + completion(CHEAT)],
            "prompts": ["q", "q"],
            "labels": [REFERENCE, REFERENCE],
            "options": FAST,
        },
    ).json()
    assert labelled["rewards"] == [1.0, -1.0] and labelled["scores"] == [1.0, 0.0]  # cheating: the penalty, score 0
    assert labelled["extra_logs"]["cheating"] == [0.0, 1.0]
    refused = httpx.post(
        f"{server_url}/v1/openrlhf/reward",
        timeout=300,
        json={
            "query": ["q" + completion(CANDIDATE), "q" + completion(CANDIDATE)],
            "prompts": ["q", "q"],
            "labels": [REFERENCE, "x = 1"],
            "options": FAST,
        },
    )
    assert (
        refused.status_code == 422 and "item 1" in refused.json()["detail"] and "not a usable problem" in refused.json()["detail"]
    )
    mismatched = httpx.post(f"{server_url}/v1/openrlhf/reward", json={"query": ["a", "b"], "prompts": ["a"]})
    assert mismatched.status_code == 422
    assert openrlhf.response_of("PROMPTresponse", "PROMPT") == "response"


def test_client_waits_out_a_429_and_retries() -> None:
    """A key over its queue limit gets 429 with Retry-After; the client sleeps that long and succeeds."""
    from triton_referee.service.server import background_server
    from triton_referee.service.settings import Settings

    with background_server(Settings(redis_url=None, auth="off", embedded_workers=1, max_queued_per_key=1)) as url:
        with RefereeClient(url, retries=0) as impatient, RefereeClient(url, retries=6) as patient:
            first = impatient.submit({"reference": REFERENCE, "candidate": CANDIDATE, **FAST})
            assert first["status"] in ("queued", "started")
            with pytest.raises(ApiError) as refused:
                impatient.evaluate(REFERENCE, "# other\nimport torch\n", **FAST)
            assert refused.value.status == 429
            started = time.monotonic()
            result = patient.evaluate(REFERENCE, "# other\nimport torch\n", **FAST)
            assert result.verdict == Verdict.invalid_submission
            assert (
                time.monotonic() - started >= 9.5
            )  # the first job (seconds on the CPU) still ran: refused, slept Retry-After (10 s)
            assert patient.wait(first["id"]).verdict == Verdict.correct
