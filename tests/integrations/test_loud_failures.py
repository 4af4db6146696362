"""Infrastructure failures are loud and never look like a reward (issue 19, item 3), each against a
real server: a wrong or missing API key (an embedded server with auth on), nothing listening, Redis
stopped under a Redis-mode server (a real redis-server), and one evaluation the server's worker
failed on."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integrations.conftest import CRASH, KEY
from tests.integrations.integration_support import CANDIDATE, FAST, REFERENCE, WRONG, completion
from tests.machine import running_redis
from triton_referee.service.client import RefereeClient, RefereeUnavailable
from triton_referee.service.integrations import RefereeInfrastructureError, openrlhf_reward, trl, verl
from triton_referee.service.server import background_server
from triton_referee.service.settings import Settings
from triton_referee.service.stack import RedisServer, free_port


@pytest.fixture(autouse=True)
def _fast_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFEREE_OPTIONS", json.dumps(FAST))
    monkeypatch.delenv("REFEREE_API_KEY", raising=False)
    monkeypatch.delenv("REFEREE_SERVER", raising=False)


@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_a_wrong_or_missing_api_key_raises_in_every_adapter(
    keyed_url: str, key: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFEREE_URL", keyed_url)
    if key:
        monkeypatch.setenv("REFEREE_API_KEY", key)
    reward = trl.make_reward_function()
    with pytest.raises(RefereeUnavailable, match=r"HTTP 401.*REFEREE_API_KEY"):
        reward([completion(CANDIDATE)], reference=[REFERENCE])
    with pytest.raises(RefereeUnavailable, match="HTTP 401"):
        verl.compute_score("kb", completion(CANDIDATE), REFERENCE)
    with pytest.raises(RefereeUnavailable, match="HTTP 401"):
        openrlhf_reward.reward_func(["p" + completion(CANDIDATE)], ["p"], [REFERENCE])
    # A completion without code never reaches the server: its 0 is the policy's, even without a key.
    assert reward(["no code here"], reference=[REFERENCE]) == [0.0]


def test_the_right_key_scores(keyed_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFEREE_URL", keyed_url)
    monkeypatch.setenv("REFEREE_API_KEY", KEY)
    assert trl.make_reward_function()([completion(CANDIDATE)], reference=[REFERENCE]) == [1.0]


def test_the_openrlhf_endpoint_takes_its_key_from_the_url_and_keeps_it_out_of_the_access_log(
    keyed_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    body = {"query": ["q" + completion(CANDIDATE)], "prompts": ["q"], "labels": [REFERENCE], "options": FAST}
    assert httpx.post(f"{keyed_url}/v1/openrlhf/reward", json=body, timeout=300).status_code == 401
    assert httpx.post(f"{keyed_url}/v1/openrlhf/reward?api_key=wrong", json=body, timeout=300).status_code == 401
    with caplog.at_level(logging.INFO, logger="uvicorn.access"):
        answer = httpx.post(f"{keyed_url}/v1/openrlhf/reward?api_key={KEY}", json=body, timeout=300)
    assert answer.status_code == 200 and answer.json()["rewards"] == [1.0], answer.text
    access = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert any("/v1/openrlhf/reward" in line for line in access), access
    assert not any(KEY in line for line in access), access


def test_a_server_that_is_down_raises_after_the_retries(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("REFEREE_URL", f"http://127.0.0.1:{free_port()}")  # nobody listens there
    with caplog.at_level(logging.WARNING, logger="referee.client"):
        with pytest.raises(RefereeUnavailable, match=r"ConnectError.*is the server running"):
            trl.make_reward_function()([completion(CANDIDATE)], reference=[REFERENCE])
    retries = [r for r in caplog.records if r.name == "referee.client" and "retry" in r.getMessage()]
    assert len(retries) == 4, [r.getMessage() for r in retries]  # every retry said so
    with pytest.raises(RefereeUnavailable):
        verl.compute_score_batch(["kb"], [completion(CANDIDATE)], [REFERENCE])


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path / "redis") as server:
        yield server


def test_redis_down_is_a_503_the_client_retries_then_raises(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(redis_url=redis_server.url, api_keys=[KEY], queue_name="loud-failures", maintenance_interval_s=60)
    with background_server(settings) as server:
        redis_server.kill()
        answer = httpx.post(
            f"{server}/v1/evaluations", headers={"X-API-Key": KEY}, json={"reference": REFERENCE, "candidate": CANDIDATE}
        )
        assert answer.status_code == 503, answer.text
        assert "Redis" in answer.json()["detail"] and answer.headers["Retry-After"] == "5"
        with RefereeClient(server, KEY, retries=1, backoff=0.05) as client, pytest.raises(Exception) as raised:
            client.evaluate(REFERENCE, CANDIDATE)
        assert "HTTP 503" in str(raised.value)
        monkeypatch.setenv("REFEREE_URL", server)
        monkeypatch.setenv("REFEREE_API_KEY", KEY)
        with caplog.at_level(logging.WARNING, logger="referee.client"):
            with pytest.raises(RefereeUnavailable, match=r"HTTP 503.*Redis"):
                trl.make_reward_function()([completion(CANDIDATE)], reference=[REFERENCE])
        assert any("retry" in r.getMessage() for r in caplog.records if r.name == "referee.client")


def test_an_evaluation_the_worker_failed_is_no_reward(crashing_worker: str, caplog: pytest.LogCaptureFixture) -> None:
    crashed = completion(CRASH + CANDIDATE)
    with caplog.at_level(logging.WARNING, logger="referee.integrations"):
        rewards = trl.make_reward_function()([completion(CANDIDATE), crashed, completion(WRONG)], reference=[REFERENCE] * 3)
    assert rewards == [1.0, None, 0.0]  # TRL leaves None out of the group's baseline
    assert any("the GPU fell off the bus" in r.getMessage() for r in caplog.records), caplog.text
    with pytest.raises(RefereeInfrastructureError, match=r"1 of 2 completions.*the GPU fell off the bus"):
        verl.compute_score_batch(["kb", "kb"], [completion(CANDIDATE), crashed], [REFERENCE] * 2)
    with pytest.raises(RefereeInfrastructureError, match="the GPU fell off the bus"):
        openrlhf_reward.reward_func(["p" + crashed], ["p"], [REFERENCE])
    answer = httpx.post(
        f"{crashing_worker}/v1/openrlhf/reward",
        timeout=300,
        json={"query": ["q" + crashed], "prompts": ["q"], "labels": [REFERENCE], "options": FAST},
    )
    assert answer.status_code == 503 and "the GPU fell off the bus" in answer.json()["detail"], answer.text


def test_the_async_client_raises_for_a_wrong_key_and_a_dead_server(keyed_url: str) -> None:
    from triton_referee.service.client import AsyncRefereeClient

    bodies = [{"reference": REFERENCE, "candidate": CANDIDATE, **FAST}] * 3

    async def run(url: str, key: str | None) -> None:
        async with AsyncRefereeClient(url, key, retries=2, backoff=0.05) as client:
            await client.evaluate_many(bodies, concurrency=3)

    with pytest.raises(RefereeUnavailable, match="HTTP 401"):
        asyncio.run(run(keyed_url, "wrong"))
    started = time.monotonic()
    with pytest.raises(RefereeUnavailable, match="ConnectError"):
        asyncio.run(run(f"http://127.0.0.1:{free_port()}", KEY))
    assert time.monotonic() - started >= 0.05 * (1 + 2) / 2  # the retries were slept, concurrently per item
