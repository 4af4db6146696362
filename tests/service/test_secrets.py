"""No secrets in results, logs or Redis: API keys and a Redis password in the URL, real jobs, then
every result document, the API's and workers' logs, /metrics, /readyz and every value in Redis are
searched for them."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import redis
from service_support import TINY_CANDIDATE, TINY_REFERENCE, full, static_reject, wait_until

from triton_referee.service.stack import ApiServer, RedisServer, Worker, live_workers

# Prints its whole environment (flushed: a harness killed at the end loses buffered output): the harness
# must have been started without the worker's secrets.
ENV_PRINTER = "import os\nprint(sorted(os.environ.items()), flush=True)\n" + TINY_CANDIDATE


def test_keys_and_the_redis_password_appear_nowhere(tmp_path: Path, redis_binary: str) -> None:
    password = "pw-" + uuid.uuid4().hex
    keys = ["key-" + uuid.uuid4().hex, "key-" + uuid.uuid4().hex]
    queue = f"secrets-{uuid.uuid4().hex[:8]}"
    redis_server = RedisServer(tmp_path / "redis", binary=redis_binary, password=password).start()
    assert password in redis_server.url
    api = ApiServer(
        redis_server.url,
        tmp_path / "api.log",
        env={"REFEREE_API_KEYS": ",".join(keys), "REFEREE_QUEUE_NAME": queue, "REFEREE_MAINTENANCE_INTERVAL_S": "0.5"},
    )
    worker = Worker(redis_server.url, queue, tmp_path / "worker.log")
    documents: list[str] = []
    try:
        worker.start()  # first: its warm pool imports torch while the API starts
        api.start()
        wait_until(lambda: live_workers(redis_server.url, queue) >= 1, 60, "the worker")
        for key in keys:
            with httpx.Client(base_url=api.url, headers={"X-API-Key": key}, timeout=120) as http:
                ids = [
                    http.post("/v1/evaluations", json=body).json()["id"]
                    for body in (
                        full(ENV_PRINTER + f"# {uuid.uuid4().hex}\n"),
                        {"reference": TINY_REFERENCE, "candidate": static_reject(uuid.uuid4().hex)},
                        {"reference": TINY_REFERENCE, "candidate": "def broken(:\n"},
                    )
                ]
                for evaluation_id in ids:
                    result = wait_until(
                        lambda i=evaluation_id: (
                            (r := http.get(f"/v1/evaluations/{i}", params={"wait": 5})).json().get("verdict") and r
                        ),
                        150,
                        "a result",
                    )
                    documents.append(result.text)
                assert "PATH" in result.text or '"verdict":"compile_error"' in result.text
                documents.append(http.get("/metrics").text)
                documents.append(http.get("/readyz").text)
                assert http.get("/v1/evaluations/nope", headers={"X-API-Key": "wrong-" + key}).status_code == 401
        connection = redis.Redis.from_url(redis_server.url)
        for name in connection.scan_iter(count=1000):
            kind = connection.type(name).decode()
            value = {
                "string": connection.get,
                "set": connection.smembers,
                "hash": connection.hgetall,
                "list": lambda n: connection.lrange(n, 0, -1),
                "zset": lambda n: connection.zrange(n, 0, -1),
                "stream": lambda n: connection.xrange(n),
            }[kind](name)
            documents.append(f"{name!r} {value!r}")
        connection.close()
    finally:
        worker.stop()
        api.stop()
        redis_server.kill()
    assert any("'PATH'" in d for d in documents), "the environment printer's output is missing"
    logs = [api.log.read_text(errors="replace"), worker.text()]
    assert "Referee API on" in logs[0] and "Job OK" in logs[1]
    for secret in (password, *keys):
        for where, text in [*(("result/metrics/redis", d) for d in documents), ("api log", logs[0]), ("worker log", logs[1])]:
            assert secret not in text, (
                f"a secret in the {where}: …{text[max(0, text.find(secret) - 200) : text.find(secret) + 50]}…"
            )
