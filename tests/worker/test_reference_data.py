"""The reference-data cache (worker/reference_data.py): a hit judges its trials with cached inputs
and expected outputs while the live model builds in the background for the fresh timing inputs and
rechecks, with the same results as a miss; a candidate carrying outputs for leaked cached inputs
fails the rechecks; entries rotate, expire and stay small; off means the old path.
tests/worker/test_corpus.py runs the exploit corpus on hits."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import TINY_REFERENCE, tiny_candidate
from triton_referee.sandbox.harness import tensors
from triton_referee.sandbox.harness.compare import unpack_expected
from triton_referee.sandbox.harness.messages import (
    CachedTrial,
    Compare,
    Environment,
    JudgeSetup,
    ReferenceSetupReply,
    TrialInputs,
    TrialInputsReply,
    TrialRecord,
    TrialSizes,
)
from triton_referee.sandbox.harness.reference import ReferenceRole
from triton_referee.worker.evaluate import evaluate
from triton_referee.worker.models import EvalConfig, EvaluationResult, Problem, Submission, Verdict
from triton_referee.worker.reference_cache import ReferenceCache
from triton_referee.worker.reference_data import ReferenceData, ReferenceDataCache

# Computes relu, then doubles it inside the kernel: launches its own kernel, no torch compute, wrong.
WRONG_CANDIDATE = tiny_candidate(
    """
    x = x.contiguous()
    out = torch.empty_like(x)
    double_relu_kernel[(triton.cdiv(x.numel(), 1024),)](x, out, x.numel(), BLOCK=1024)
    return out
    """,
    prelude="""

    @triton.jit
    def double_relu_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        x = tl.load(x_ptr + offs, mask=mask, other=0.0)
        tl.store(out_ptr + offs, tl.where(x > 0, 2.0 * x, 0.0), mask=mask)
    """,
)
LIVE_REFERENCE_STEPS = {"reference.inputs", "reference.timing_inputs", "reference.time"}
BACKGROUND_STEPS = {"reference.background_setup", "reference.background_timing_inputs"}


def _run(
    candidate: str, pool: Any, timing: ReferenceCache | None = None, data: ReferenceDataCache | None = None, **config: Any
) -> EvaluationResult:
    return evaluate(
        Problem(source=TINY_REFERENCE),
        Submission(source=candidate),
        EvalConfig(device="cpu", trials=2, **config),
        reference_cache=timing,
        reference_data=data,
        pool=pool,
    )


def _judged_alike(miss: EvaluationResult, hit: EvaluationResult) -> None:
    assert hit.verdict == miss.verdict and hit.reward == miss.reward
    assert hit.correctness == miss.correctness
    assert hit.anti_cheat == miss.anti_cheat
    assert hit.environment == miss.environment


def test_a_hit_judges_like_a_miss_with_the_model_built_in_the_background(honest_tiny_candidate: str, warm_pool: Any) -> None:
    # A fixed seed: the miss and the hit then see the same inputs, so even the errors must agree.
    timing, data = ReferenceCache(), ReferenceDataCache()
    first = _run(honest_tiny_candidate, warm_pool, timing, data, seed=7)
    assert first.performance.reference_outputs_cached is False and len(data.store.keys()) == 1
    for candidate, verdict in ((honest_tiny_candidate, Verdict.correct), (WRONG_CANDIDATE, Verdict.incorrect)):
        uncached = _run(candidate, warm_pool, seed=7)
        hit = _run(candidate, warm_pool, timing, data, seed=7)
        assert hit.verdict == verdict, hit.feedback
        assert uncached.performance.reference_outputs_cached is False
        assert hit.performance.reference_outputs_cached is True
        assert BACKGROUND_STEPS <= set(hit.timings_ms.steps) and "reference.time" not in hit.timings_ms.steps
        assert "reference.inputs" in uncached.timings_ms.steps and not BACKGROUND_STEPS & set(uncached.timings_ms.steps)
        _judged_alike(uncached, hit)
    assert hit.correctness.first_failure and hit.correctness.first_failure["shapes"] == [[1000]]
    assert hit.correctness.first_failure["worst_expected"] is not None


def _memorizing_candidate(known: dict[float, list[float]], otherwise: str) -> str:
    """Writes, with a Triton copy kernel, the outputs it carries for inputs it recognises (by their
    first value); for any other input it runs `otherwise`."""
    return tiny_candidate(
        f"""
        x = x.contiguous()
        out = torch.empty_like(x)
        outputs = KNOWN.get(round(float(x[0]), 5))
        if outputs is None:
            {otherwise}
        copy_kernel[(triton.cdiv(x.numel(), 1024),)](torch.tensor(outputs, dtype=x.dtype), out, x.numel(), BLOCK=1024)
        return out
        """,
        prelude=f"""

        KNOWN = {known!r}


        @triton.jit
        def copy_kernel(src_ptr, out_ptr, n, BLOCK: tl.constexpr):
            offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
            mask = offs < n
            tl.store(out_ptr + offs, tl.load(src_ptr + offs, mask=mask), mask=mask)
        """,
    )


def test_outputs_carried_for_leaked_cached_inputs_fail_the_fresh_rechecks(honest_tiny_candidate: str, warm_pool: Any) -> None:
    """A submitter can read a candidate's stdout, so cached trial inputs can leak; a later candidate
    carrying the outputs for them passes the cached trials and must still fail."""
    timing, data = ReferenceCache(), ReferenceDataCache()
    assert _run(honest_tiny_candidate, warm_pool, timing, data).verdict == Verdict.correct
    (key,) = data.store.keys()
    entry = data.store._entries[key][0]
    known = {}
    for label, trial in entry.trials.items():
        (x,) = tensors.decode(trial["inputs"], entry.blobs[f"{label}.inputs"], "cpu")
        expected, _exact = unpack_expected(tensors.decode(trial["expected"], entry.blobs[f"{label}.expected"], "cpu"))
        known[round(float(x[0]), 5)] = expected.tolist()
    identity = "copy_kernel[(triton.cdiv(x.numel(), 1024),)](x, out, x.numel(), BLOCK=1024); return out"  # wrong: no relu
    cheat = _run(_memorizing_candidate(known, identity), warm_pool, timing, data)
    assert cheat.performance.reference_outputs_cached is True
    assert cheat.correctness.passed == cheat.correctness.trials > 0  # every cached trial passed
    # The timed rounds run on fresh values it does not know, checked after each round; the rechecks too.
    rules = {v.rule for v in cheat.anti_cheat.violations}
    assert cheat.correctness.recheck_passed is False, cheat.feedback
    assert cheat.verdict == Verdict.cheating and "timed_output_mismatch" in rules, (cheat.verdict, rules)
    # Near it, accepted: the same table, and the real computation for inputs it does not know.
    honest = _run(_memorizing_candidate(known, "return launch_relu(x, out)"), warm_pool, timing, data)
    assert honest.performance.reference_outputs_cached is True
    assert honest.verdict == Verdict.correct, honest.feedback


def test_an_entry_rotates_after_its_uses(honest_tiny_candidate: str, warm_pool: Any) -> None:
    timing, data = ReferenceCache(), ReferenceDataCache(max_uses=1)
    flags = []
    salts = []
    for _ in range(3):
        result = _run(honest_tiny_candidate, warm_pool, timing, data)
        assert result.verdict == Verdict.correct, result.feedback
        flags.append(result.performance.reference_outputs_cached)
        (key,) = data.store.keys()
        salts.append(data.store._entries[key][0].salt)
    assert flags == [False, True, False]  # stored, used once, then replaced under a new salt
    assert salts[0] == salts[1] != salts[2]


def test_an_oversized_problem_is_not_cached(honest_tiny_candidate: str, warm_pool: Any) -> None:
    timing, data = ReferenceCache(), ReferenceDataCache(max_entry_bytes=6000)  # one trial's inputs and outputs: 8000
    results = [_run(honest_tiny_candidate, warm_pool, timing, data) for _ in range(2)]
    assert [r.verdict for r in results] == [Verdict.correct] * 2
    assert [r.performance.reference_outputs_cached for r in results] == [False, False]
    assert results[1].performance.reference_cached is True  # the timing is still cached
    assert data.store.keys() == []


def test_without_a_timing_cache_the_data_cache_stays_unused(honest_tiny_candidate: str, warm_pool: Any) -> None:
    data = ReferenceDataCache()
    results = [_run(honest_tiny_candidate, warm_pool, None, data) for _ in range(2)]
    assert [r.performance.reference_outputs_cached for r in results] == [False, False]
    assert data.store.keys() == []
    assert results[1].timings_ms.steps.keys() >= LIVE_REFERENCE_STEPS


@pytest.mark.parametrize(
    ("environment", "timing_on", "data_on"),
    [
        ({}, True, True),
        ({"REFEREE_REFERENCE_CACHE": "off"}, False, False),
        ({"REFEREE_REFERENCE_DATA_CACHE": "off"}, True, False),
    ],
)
def test_the_worker_switches(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, environment: dict[str, str], timing_on: bool, data_on: bool
) -> None:
    """The variables reach the job through the settings read at the worker's start and the context
    made from them (worker/context.py): the same path as the warm pool's."""
    import triton_referee.worker.jobs as jobs
    from triton_referee.worker import context
    from triton_referee.worker.settings import JudgeSettings

    seen: dict[str, Any] = {}

    def fake_evaluate(problem: Any, submission: Any, config: Any, **kwargs: Any) -> EvaluationResult:
        seen.update(kwargs)
        return EvaluationResult(id=kwargs["job_id"], verdict=Verdict.correct)

    monkeypatch.setattr(jobs, "evaluate", fake_evaluate)
    for name in ("REFEREE_REFERENCE_CACHE", "REFEREE_REFERENCE_DATA_CACHE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings = JudgeSettings(isolation="process", warm_pool=False, reference_cache_dir=tmp_path / "reference")
    host = context.start(settings, data_in_files=False)
    try:
        jobs.run_evaluation(
            {"id": "x", "problem": {"source": TINY_REFERENCE}, "submission": {"source": "x"}, "config": {"device": "cpu"}}
        )
    finally:
        context.stop(host)
    assert (seen["reference_cache"] is not None and seen["reference_cache"] is host.reference_cache) is timing_on
    assert (seen["reference_data"] is not None and seen["reference_data"] is host.reference_data) is data_on
    assert seen["isolation"] is host.isolation and seen["audit_hook"] is True


def test_an_rq_worker_keeps_reference_data_in_a_private_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from triton_referee.worker import context
    from triton_referee.worker.settings import JudgeSettings

    monkeypatch.setenv("REFEREE_REFERENCE_DATA_MAX_USES", "7")
    host = context.start(
        JudgeSettings(isolation="process", warm_pool=False, reference_cache_dir=tmp_path / "reference"), data_in_files=True
    )
    context.stop(host)
    assert host.reference_data is not None and host.reference_data.max_uses == 7
    assert host.reference_data.store.directory == tmp_path / "reference" / "data"
    assert stat.S_IMODE((tmp_path / "reference" / "data").stat().st_mode) == 0o700


# --- the cache itself, without processes -----------------------------------------------------------


def _entry(size: int = 100, salt: int = 1) -> ReferenceData:
    environment = Environment(device="cpu", torch="2", triton="3", python="3.12", interpreter=True)
    entry = ReferenceData.start(
        salt, ReferenceSetupReply(environment=environment, init_inputs={"t": "list", "items": []}, valid_sets=[0]), b""
    )
    for label in ("trial0", "trial1"):
        recorded = TrialInputsReply(
            inputs={"t": "list", "items": []},
            shapes=[[size]],
            nbytes=TrialSizes(inputs=size, expected=size),
            record=TrialRecord(inputs={"t": "tensor"}, expected={"t": "tensor"}, fds=[0, 1]),
        )
        entry.add_trial(label, 0, recorded, bytes(range(256)) * (size // 256) + bytes(size % 256), bytes(size))
    return entry


@pytest.mark.parametrize("directory", [False, True], ids=["memory", "directory"])
def test_uses_expiry_and_size_bounds(tmp_path: Path, directory: bool) -> None:
    def cache(**options: Any) -> ReferenceDataCache:
        return ReferenceDataCache(tmp_path / "data" if directory else None, **options)

    bounded = cache(max_uses=2)
    assert bounded.put("k", _entry()) is True
    assert bounded.take("k") is not None and bounded.take("k") is not None
    assert bounded.take("k") is None and bounded.take("k") is None  # used up: dropped
    assert bounded.store.keys() == []

    expiring = cache(ttl_s=60)
    old = _entry()
    old.created = time.time() - 61
    expiring.put("old", old)
    assert expiring.take("old") is None and "old" not in expiring.store.keys()

    small = cache(max_entry_bytes=500)
    assert small.put("big", _entry(size=200)) is False  # 2 labels x (200 + 200) bytes
    incomplete = _entry()
    incomplete.trials.clear()
    assert small.put("incomplete", incomplete) is False
    assert small.store.keys() == []

    lru = cache(max_total_bytes=10_000)
    for key in ("a", "b", "c"):  # about 4 kB each (and a header on disk): two fit
        lru.put(key, _entry(size=1000))
        time.sleep(0.01)  # distinct modification times for the directory store
        lru.take("a")
    assert sorted(lru.store.keys()) == ["a", "c"]


def test_directory_entries_are_shared_private_and_counted_together(tmp_path: Path) -> None:
    one, two = (ReferenceDataCache(tmp_path / "data", max_uses=3) for _ in range(2))
    entry = _entry(salt=12345)
    one.put("k", entry)
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "data" / "k.entry").stat().st_mode) == 0o600
    found = two.take("k")
    assert found is not None
    assert (found.salt, found.setup, found.trials, found.blobs, found.id) == (
        entry.salt,
        entry.setup,
        entry.trials,
        entry.blobs,
        entry.id,
    )
    assert one.take("k") is not None and two.take("k") is not None
    assert one.take("k") is None  # the fourth use, counted across both
    assert list((tmp_path / "data").iterdir()) == []
    (tmp_path / "data" / "k.entry").write_bytes(b"\x00\x00\x00\x00\x00\x00\x00\x05{bad")
    assert one.take("k") is None and not (tmp_path / "data" / "k.entry").exists()


# --- the judge ---------------------------------------------------------------------------------------


def _judge_compare(outputs: Any, expected: torch.Tensor, pristine: list[Any], mutate: bool = False) -> dict[str, Any]:
    """A judge given a cached trial (inputs and expected outputs as sealed memfds, as the engine
    hands them over) compares outputs exported as the candidate's process exports them."""
    judge = ReferenceRole()
    reply, _ = judge.cmd_judge(JudgeSetup(device="cpu"), [])
    assert reply.environment.device == "cpu" and judge.model is None and judge.module is None
    pristine_desc, pristine_fd = tensors.share_bytes(pristine)
    expected_desc, expected_fd = tensors.share_bytes(expected)
    shared, (shared_fd,) = judge.cmd_inputs(
        TrialInputs(trial="trial0", cached=CachedTrial(inputs=pristine_desc, expected=expected_desc)), [pristine_fd, expected_fd]
    )
    os.close(pristine_fd)
    os.close(expected_fd)
    attached = tensors.Attached(torch.device("cpu"))
    inputs = attached.attach(shared.inputs, [shared_fd], writable=True)  # the candidate's view
    if mutate:
        inputs[0].zero_()
    description, fds = (
        tensors.export_outputs(outputs, torch.device("cpu")) if isinstance(outputs, torch.Tensor) else (outputs, [])
    )
    compared, _ = judge.cmd_compare(Compare(trial="trial0", outputs=description), fds)
    for fd in [shared_fd, *fds]:
        os.close(fd)
    return compared.report.to_wire()


def test_the_judge_compares_with_the_supplied_expected_outputs() -> None:
    x = torch.randn(64)
    expected = torch.relu(x)
    report = _judge_compare(expected.clone(), expected, [x])
    assert report["passed"] is True and report["inputs"]["unchanged"] is True
    assert _judge_compare(expected + 1, expected, [x])["passed"] is False
    # The judge sees a write to the shared inputs through its own mapping, against its pristine copy.
    assert _judge_compare(expected.clone(), expected, [x], mutate=True)["inputs"]["unchanged"] is False


@pytest.mark.parametrize(
    "reaching",
    [
        {"t": "tensor", "dtype": "float32", "shape": [64], "offset": 0, "nbytes": 256, "fd": 1},  # a descriptor it did not send
        {"t": "tensor", "dtype": "float32", "shape": [64], "offset": 0, "nbytes": 256},  # no descriptor at all
        {
            "t": "tensor",
            "dtype": "float32",
            "shape": [64],
            "offset": 0,
            "nbytes": 256,
            "ipc": "00" * 64,
        },  # a CUDA handle on a CPU judge
    ],
)
def test_a_candidate_description_cannot_reach_the_cached_expected_bytes(reaching: dict[str, Any]) -> None:
    """A candidate's description names only the descriptors sent with its own reply: the judge's
    expected outputs and pristine inputs are in its private memory, named by nothing the candidate sends."""
    x = torch.randn(64)
    expected = torch.relu(x)
    report = _judge_compare(reaching, expected, [x])
    assert report["passed"] is False and "undecodable" in report
