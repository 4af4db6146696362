"""The per-GPU timing lock (real flock across threads, as between the threads of an embedded server)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from triton_referee.worker.timing_lock import TimingLock


def _in_thread(target) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_gpu_steps_share_the_gpu_and_a_timer_waits_for_them_to_end(tmp_path: Path) -> None:
    lock = TimingLock(tmp_path / "gpu-0.lock")
    events: list[str] = []

    def timing() -> None:
        with lock.held():
            events.append("timing")

    with lock.shared(), lock.shared():  # two evaluations' steps at once
        timer = _in_thread(timing)
        time.sleep(0.3)
        assert events == []  # the timer waits while steps run
        events.append("steps done")
    timer.join(5)
    assert events == ["steps done", "timing"]


def test_a_waiting_timer_goes_before_steps_that_start_after_it(tmp_path: Path) -> None:
    lock = TimingLock(tmp_path / "gpu-0.lock")
    order: list[str] = []
    release_timer = threading.Event()

    def timer() -> None:
        with lock.held():
            order.append("timer")
            release_timer.wait(5)

    def late_step() -> None:
        with lock.shared():
            order.append("late step")

    with lock.shared():
        first = _in_thread(timer)
        time.sleep(0.3)  # the timer now waits at the turnstile
        second = _in_thread(late_step)
        time.sleep(0.3)
        assert order == []  # the late step waits behind the waiting timer, not only behind the running step
    time.sleep(0.3)
    assert order == ["timer"]
    release_timer.set()
    first.join(5)
    second.join(5)
    assert order == ["timer", "late step"]


def test_without_exclusive_timing_steps_hold_nothing(tmp_path: Path) -> None:
    lock = TimingLock(tmp_path / "gpu-0.lock", exclusive=False)
    done = threading.Event()

    def step() -> None:
        with lock.shared():
            done.set()

    with lock.held():
        thread = _in_thread(step)
        assert done.wait(2)  # ran while a timer held the GPU
    thread.join(2)
