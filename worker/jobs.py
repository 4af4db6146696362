"""The job function a worker runs: one evaluation, payload in, result document out.

It knows nothing of Redis or of the service's records: RQ (or the embedded queue) stores what it
returns, and the service turns that, or a failure, into the final result.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from sandbox.isolation import Isolation
from sandbox.selection import cached_isolation
from worker.evaluate import detect_device, evaluate
from worker.models import EvalConfig, EvaluationResult, Problem, Submission, Verdict
from worker.pool import WarmPool, client_from_environment
from worker.reference_cache import ReferenceCache
from worker.reference_data import DEFAULT_MAX_ENTRY_BYTES, DEFAULT_MAX_USES, DEFAULT_TTL_S, ReferenceDataCache
from worker.static_checks import ProblemSourceError
from worker.timing_lock import TimingLock


def _cache_directory() -> Path:
    """REFEREE_REFERENCE_CACHE_DIR (default ~/.cache/triton-referee/reference) when this user can
    write there; else, saying so, a private temporary directory: the cache only saves time, and a
    worker that exits over it (a root-owned volume under a non-root worker) restarts in a loop."""
    wanted = Path(os.environ.get("REFEREE_REFERENCE_CACHE_DIR") or Path.home() / ".cache" / "triton-referee" / "reference")
    try:
        wanted.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=wanted).close()
        return wanted
    except OSError as exc:
        fallback = Path(tempfile.mkdtemp(prefix="referee-reference-cache-"))
        try:
            owner: int | None = wanted.stat().st_uid
        except OSError:
            owner = None
        print(f"warning: the reference cache {wanted} is not writable by uid {os.getuid()} ({exc.strerror or exc}"
              f"{f'; owned by uid {owner}' if owner is not None else ''}); this worker caches in {fallback} instead. "
              f"Fix: chown {os.getuid()} {wanted}", file=sys.stderr, flush=True)
        return fallback


# Shared by every job of this host (RQ runs each job in a fresh work-horse process, so the
# directory is what carries reference timings from one evaluation of a problem to the next).
REFERENCE_CACHE = ReferenceCache(_cache_directory())


def reference_data_cache(directory: Path | None = None) -> ReferenceDataCache:
    """The cache of reference inputs and expected outputs (`worker/reference_data.py`), bounded by
    REFEREE_REFERENCE_DATA_MAX_USES, REFEREE_REFERENCE_DATA_TTL_S and REFEREE_REFERENCE_DATA_MAX_BYTES."""
    return ReferenceDataCache(
        directory,
        max_uses=int(os.environ.get("REFEREE_REFERENCE_DATA_MAX_USES") or DEFAULT_MAX_USES),
        ttl_s=float(os.environ.get("REFEREE_REFERENCE_DATA_TTL_S") or DEFAULT_TTL_S),
        max_entry_bytes=int(os.environ.get("REFEREE_REFERENCE_DATA_MAX_BYTES") or DEFAULT_MAX_ENTRY_BYTES),
    )


# In this process's memory: the embedded server's threads share it. An RQ worker switches to a
# directory (`use_reference_data_directory`), as each of its jobs runs in a forked work horse.
REFERENCE_DATA = reference_data_cache()


def use_reference_data_directory() -> None:
    """Keep reference data as files beside the reference timings (private to this host's workers)."""
    global REFERENCE_DATA
    root = REFERENCE_CACHE.directory or Path.home() / ".cache" / "triton-referee" / "reference"
    REFERENCE_DATA = reference_data_cache(root / "data")


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
        data_caching = caching and os.environ.get("REFEREE_REFERENCE_DATA_CACHE", "on") != "off"
        result = evaluate(problem, submission, config, job_id=evaluation_id, reference_cache=REFERENCE_CACHE if caching else None,
                          isolation=isolation, pool=pool, timing_lock=TimingLock.for_gpu(),
                          reference_data=REFERENCE_DATA if data_caching else None)
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
