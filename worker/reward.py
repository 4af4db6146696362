"""Reward presets. Every preset gives nothing for a wrong answer and the configured penalty for
cheating; they differ in how speed counts. Where the speed figure is not meaningful (the CPU
interpreter), only the correctness term is used.

- tritonrl (hierarchical, after TritonRL): `rewards.correctness` (1 or 0, for code tokens) and
  `rewards.speedup` (the speedup when correct, for plan tokens); reward = correctness x speedup.
- fast_p (KernelBench's fast_p): reward 1 when correct and speedup > p, else 0.
- drkernel (Dr. Kernel / KernelGYM style): correctness + min(speedup, cap) when correct.

A correct answer with a small epilogue in torch (the `torch_epilogue` warning) keeps
`1 - torch_epilogue_penalty` of its reward (`rewards` stay as computed).
"""

from __future__ import annotations

from .models import RewardConfig, Rewards, Verdict


def compute_reward(
    verdict: Verdict, speedup: float | None, meaningful: bool, config: RewardConfig, penalty: float = 0.0
) -> tuple[float, Rewards]:
    """`penalty` (0..1): the share of a correct answer's reward taken away (a torch epilogue)."""
    reward, rewards = _reward(verdict, speedup, meaningful, config)
    if penalty and verdict == Verdict.correct and reward > 0:
        reward *= 1.0 - penalty
    return reward, rewards


def _reward(verdict: Verdict, speedup: float | None, meaningful: bool, config: RewardConfig) -> tuple[float, Rewards]:
    if verdict == Verdict.cheating:
        return config.cheat_penalty, Rewards(correctness=0.0, speedup=0.0)
    if verdict != Verdict.correct:
        return 0.0, Rewards(correctness=0.0, speedup=0.0)
    timed = speedup if meaningful else None  # the speedup, where it counts
    if config.preset == "tritonrl":
        speed = timed if timed is not None else 0.0
        return (speed if timed is not None else 1.0), Rewards(correctness=1.0, speedup=speed)
    if config.preset == "fast_p":
        fast = 1.0 if timed is not None and timed > config.fast_p_threshold else 0.0
        return (fast if timed is not None else 1.0), Rewards(correctness=1.0, speedup=fast)
    capped = min(timed, config.speedup_cap) if timed is not None else 0.0
    return 1.0 + capped, Rewards(correctness=1.0, speedup=capped)
