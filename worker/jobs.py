"""The job function a worker runs: one evaluation, payload in, result document out.

It knows nothing of Redis or of the service's records: RQ (or the embedded queue) stores what it
returns, and the service turns that, or a failure, into the final result.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from sandbox.evaluate import detect_device, evaluate
from sandbox.isolation import Isolation, cached_isolation
from sandbox.models import EvalConfig, EvaluationResult, Problem, Submission, Verdict
from sandbox.pool import WarmPool, client_from_environment
from sandbox.reference_cache import ReferenceCache
from sandbox.static_checks import ProblemSourceError
from sandbox.timing_lock import TimingLock

# Shared by every job of this host (RQ runs each job in a fresh work-horse process, so the
# directory is what carries reference timings from one evaluation of a problem to the next).
REFERENCE_CACHE = ReferenceCache(
    os.environ.get("REFEREE_REFERENCE_CACHE_DIR") or Path.home() / ".cache" / "triton-referee" / "reference"
)


# Backends the zygote can run inside: it and its children share one namespace and private root.
POOLED_BACKENDS = ("process", "unshare", "bwrap")


def worker_isolation() -> Isolation:
    """The backend this worker confines harness processes with (`REFEREE_ISOLATION`, default auto)."""
    return cached_isolation(os.environ.get("REFEREE_ISOLATION") or "auto")


def start_warm_pool(device: str | None = None, spares: int = 2) -> WarmPool | None:
    """Start this worker's warm pool and publish it to `run_evaluation` through the environment, so
    RQ's forked work horses and the embedded queue's threads all use it. A watcher restarts the
    zygote if it dies (a job caught in that moment fails with infrastructure_error and is retried)."""
    isolation = worker_isolation()
    if isolation.name not in POOLED_BACKENDS:
        return None  # docker keeps its own pool of containers, each harness process in one

    pool = WarmPool(device or detect_device(), spares=spares, warm_target="auto", isolation=isolation)
    pool.start()
    os.environ.update(pool.client.environment())

    def watch() -> None:
        while not pool.stopped:
            threading.Event().wait(2.0)
            try:
                pool.ensure()
            except Exception:  # tried again on the next round
                pass

    threading.Thread(target=watch, name="referee-pool-watch", daemon=True).start()
    return pool


def stop_warm_pool(pool: WarmPool) -> None:
    for name in pool.client.environment():
        os.environ.pop(name, None)
    pool.stop()


def run_evaluation(payload: dict[str, Any]) -> dict[str, Any]:
    """Evaluate `payload` = {"id", "problem": Problem, "submission": Submission, "config": EvalConfig}.

    A reference that turns out unusable only when it runs (the service rejects what it can see
    statically with a 422) ends as `invalid_submission` with `error.kind == "problem_error"`: the
    candidate is not to blame, and the caller must fix the problem. Anything else that raises is
    left to the queue, which retries it and finally records `infrastructure_error`.
    """
    evaluation_id = payload["id"]
    problem = Problem.model_validate(payload["problem"])
    submission = Submission.model_validate(payload["submission"])
    config = EvalConfig.model_validate(payload["config"])
    isolation = worker_isolation()
    pool = client_from_environment()
    device = detect_device() if config.device == "auto" else config.device
    if pool is not None and (pool.device != device or pool.isolation_name != isolation.name):
        pool = None  # the zygote was made for another device or backend; start fresh processes
    try:
        caching = os.environ.get("REFEREE_REFERENCE_CACHE", "on") != "off"
        result = evaluate(problem, submission, config, job_id=evaluation_id, reference_cache=REFERENCE_CACHE if caching else None,
                          isolation=isolation, pool=pool, timing_lock=TimingLock.for_gpu())
    except ProblemSourceError as exc:
        result = EvaluationResult(
            id=evaluation_id,
            verdict=Verdict.invalid_submission,
            reward_preset=config.reward.preset,
            error={"kind": "problem_error", "message": str(exc)},
            feedback=f"The reference problem could not be used, so the candidate was not judged: {exc}",
        )
    return result.model_dump(mode="json")


def failure_document(evaluation_id: str, message: str, reward_preset: str = "tritonrl") -> dict[str, Any]:
    """The result recorded when an evaluation could not be carried out (worker died, timed out, raised)."""
    return EvaluationResult(
        id=evaluation_id,
        status="failed",
        verdict=Verdict.infrastructure_error,
        reward_preset=reward_preset,  # type: ignore[arg-type]
        error={"kind": "infrastructure_error", "message": message},
        feedback="Referee could not complete this evaluation; this says nothing about the candidate. Submit it again.",
    ).model_dump(mode="json")
