"""The adapters through the trainers' own code (issue 19, "Show"): TRL's GRPOTrainer._calculate_rewards,
verl's reward-function loading (`load_extern_object`, `get_custom_reward_fn`, file path and pkg://)
and its NaiveRewardManager's reward tensor, OpenRLHF's SingleTurnAgentExecutor loading the
reward_func file and calling the HTTP endpoint. Installed here by `trainer_packages` (verl and
OpenRLHF without their GPU dependencies). Where a trainer's code cannot be imported here (OpenRLHF's
samples_generator imports vllm), its few lines are reproduced below and say so."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.integrations.conftest import CRASH, KEY
from tests.integrations.integration_support import CANDIDATE, CHEAT, FAST, REFERENCE, WRONG, completion
from tests.integrations.trainer_packages import ensure_trainers

ensure_trainers()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402

import triton_referee.service.integrations as integrations  # noqa: E402
from triton_referee.service.integrations import RefereeUnavailable  # noqa: E402

ADAPTERS = Path(integrations.__file__).parent


@pytest.fixture(autouse=True)
def _env(server_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFEREE_URL", server_url)
    monkeypatch.setenv("REFEREE_OPTIONS", json.dumps(FAST))
    monkeypatch.delenv("REFEREE_API_KEY", raising=False)


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    corpus = [completion(CANDIDATE), completion(WRONG), REFERENCE, "Write a Triton kernel for this model."] * 20
    bpe.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=400, special_tokens=["<pad>", "<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    return PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", eos_token="<eos>")


# --- TRL ------------------------------------------------------------------------------------------


def _grpo_rewards(reward_func: Any, completions: list[Any], references: list[str]) -> torch.Tensor:
    """TRL's own GRPOTrainer._calculate_rewards, on an object carrying the attributes it reads."""
    from trl.trainer.grpo_trainer import GRPOTrainer

    trainer = SimpleNamespace(
        accelerator=SimpleNamespace(device=torch.device("cpu"), is_main_process=True),
        reward_funcs=[reward_func],
        reward_processing_classes=[None],
        reward_func_names=[reward_func.__name__],
        state=SimpleNamespace(global_step=0),
        args=SimpleNamespace(report_to=[]),
        _log_completion_extra=lambda *a: None,
        _log_metric=lambda *a: None,
        environments=None,
    )
    inputs = [{"prompt": "p", "reference": r} for r in references]
    return GRPOTrainer._calculate_rewards(trainer, inputs, ["p"] * len(completions), completions, [[0]] * len(completions))


def test_trl_calculate_rewards_calls_the_reward_function() -> None:
    from triton_referee.service.integrations.trl import make_reward_function

    rewards = _grpo_rewards(make_reward_function(), [completion(CANDIDATE), completion(CHEAT), "no code"], [REFERENCE] * 3)
    assert rewards[:, 0].tolist() == [1.0, -1.0, 0.0]


def test_trl_gets_nan_for_a_failed_evaluation_and_an_exception_for_a_broken_service(
    crashing_worker: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from triton_referee.service.integrations.trl import make_reward_function

    rewards = _grpo_rewards(make_reward_function(), [completion(CANDIDATE), completion(CRASH + CANDIDATE)], [REFERENCE] * 2)
    assert rewards[0, 0].item() == 1.0 and torch.isnan(rewards[1, 0])  # None -> NaN: TRL leaves it out of the baseline
    monkeypatch.setenv("REFEREE_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(RefereeUnavailable):
        _grpo_rewards(make_reward_function(), [completion(CANDIDATE)], [REFERENCE])


# --- verl -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [str(ADAPTERS / "verl.py"), "pkg://triton_referee.service.integrations.verl"])
def test_verl_loads_the_reward_function_by_file_and_by_pkg(path: str) -> None:
    from omegaconf import OmegaConf
    from verl.trainer.ppo.reward import get_custom_reward_fn

    config = OmegaConf.create(
        {"reward": {"custom_reward_function": {"path": path, "name": "compute_score", "reward_kwargs": {}}}}
    )
    compute_score = get_custom_reward_fn(config)
    scored = compute_score(data_source="kb", solution_str=completion(CANDIDATE), ground_truth=REFERENCE, extra_info={})
    assert scored["score"] == 1.0 and scored["verdict"] == "correct"
    assert 0 < scored["code_start"] < scored["code_end"]


def _data_proto(tokenizer: PreTrainedTokenizerFast, responses: list[str], ground_truth: str) -> Any:
    """A batch as verl's rollout leaves it: left-padded prompts, right-padded responses, one mask."""
    from verl import DataProto

    prompt_ids = [tokenizer("Write a Triton kernel for this model.", add_special_tokens=False)["input_ids"]] * len(responses)
    response_ids = [tokenizer(r, add_special_tokens=False)["input_ids"] for r in responses]
    pad = tokenizer.pad_token_id
    p_len, r_len = max(map(len, prompt_ids)), max(map(len, response_ids)) + 3
    prompts = torch.tensor([[pad] * (p_len - len(p)) + p for p in prompt_ids])
    resp = torch.tensor([r + [pad] * (r_len - len(r)) for r in response_ids])
    mask = torch.tensor(
        [
            [0] * (p_len - len(p)) + [1] * len(p) + [1] * len(r) + [0] * (r_len - len(r))
            for p, r in zip(prompt_ids, response_ids, strict=True)
        ]
    )
    n = len(responses)
    return DataProto.from_dict(
        tensors={"prompts": prompts, "responses": resp, "attention_mask": mask, "input_ids": torch.cat([prompts, resp], dim=1)},
        non_tensors={
            "data_source": np.array(["kernelbench"] * n, dtype=object),
            "reward_model": np.array([{"ground_truth": ground_truth}] * n, dtype=object),
            "extra_info": np.array([{}] * n, dtype=object),
        },
    ), response_ids


def test_verl_naive_reward_manager_puts_the_score_on_the_last_token(tokenizer: PreTrainedTokenizerFast) -> None:
    from verl.utils.import_utils import load_extern_object
    from verl.workers.reward_manager import NaiveRewardManager

    compute_score = load_extern_object(str(ADAPTERS / "verl.py"), "compute_score")
    data, response_ids = _data_proto(tokenizer, [completion(CANDIDATE), completion(WRONG)], REFERENCE)
    out = NaiveRewardManager(tokenizer, num_examine=0, compute_score=compute_score)(data, return_dict=True)
    tensor = out["reward_tensor"]
    assert tensor[0, len(response_ids[0]) - 1].item() == 1.0 and tensor[0].sum().item() == 1.0
    assert tensor[1].abs().sum().item() == 0.0
    assert list(out["reward_extra_info"]["verdict"]) == ["correct", "incorrect"]


def test_verl_reward_loop_manager_scores_and_a_failed_evaluation_stops_the_step(
    tokenizer: PreTrainedTokenizerFast, crashing_worker: str
) -> None:
    """verl 0.9's default path: the reward loop's NaiveRewardManager.run_single calls compute_score
    per sample; a failed evaluation raises through it instead of a 0.0 reward."""
    from omegaconf import OmegaConf
    from verl.experimental.reward_loop.reward_manager.naive import NaiveRewardManager
    from verl.trainer.ppo.reward import get_custom_reward_fn

    config = OmegaConf.create(
        {"reward": {"custom_reward_function": {"path": str(ADAPTERS / "verl.py"), "name": "compute_score"}}}
    )
    manager = NaiveRewardManager(config, tokenizer, get_custom_reward_fn(config))
    data, _ = _data_proto(tokenizer, [completion(CANDIDATE), completion(CRASH + CANDIDATE)], REFERENCE)
    loop = asyncio.new_event_loop()
    try:
        manager.loop = loop
        scored = loop.run_until_complete(manager.run_single(data[0:1]))
        assert scored["reward_score"] == 1.0 and scored["reward_extra_info"]["verdict"] == "correct"
        with pytest.raises(integrations.RefereeInfrastructureError, match="the GPU fell off the bus"):
            loop.run_until_complete(manager.run_single(data[1:2]))
    finally:
        loop.close()


def test_verl_referee_reward_manager_assigns_correctness_to_code_tokens(tokenizer: PreTrainedTokenizerFast) -> None:
    from verl.utils.import_utils import load_extern_object
    from verl.workers.reward_manager import get_reward_manager_cls

    manager_cls = load_extern_object(str(ADAPTERS / "verl.py"), "RefereeRewardManager")  # loading registers it
    assert get_reward_manager_cls("referee").__name__ == manager_cls.__name__
    data, response_ids = _data_proto(tokenizer, [completion(CANDIDATE), completion(CHEAT), "no code"], REFERENCE)
    out = manager_cls(tokenizer, num_examine=0)(data, return_dict=True)
    tensor = out["reward_tensor"]
    assert tensor.shape == data.batch["responses"].shape
    first = tensor[0, : len(response_ids[0])].tolist()
    assert first.count(1.0) > 20 and first.count(0.0) > 10  # correctness on the code, speedup (0 on the CPU) on the plan
    start, end = out["reward_extra_info"]["code_start"][0], out["reward_extra_info"]["code_end"][0]
    code = tokenizer.decode([t for t, r in zip(response_ids[0], first, strict=True) if r == 1.0])
    assert completion(CANDIDATE)[start:end].strip() in code
    assert tensor[0, len(response_ids[0]) :].abs().sum().item() == 0.0  # nothing on padding
    assert set(tensor[1, : len(response_ids[1])].tolist()) == {-1.0}  # cheating: the penalty on every token
    assert tensor[2].abs().sum().item() == 0.0
    scalar = manager_cls(tokenizer, token_level=False)(data)
    assert scalar[0, len(response_ids[0]) - 1].item() == 1.0 and scalar[0].sum().item() == 1.0


def test_verl_registers_the_manager_through_its_external_modules_variable() -> None:
    code = "from verl.workers.reward_manager import get_reward_manager_cls\nprint(get_reward_manager_cls('referee').__name__)"
    env = {"VERL_USE_EXTERNAL_MODULES": "triton_referee.service.integrations.verl", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0 and done.stdout.strip() == "RefereeRewardManager", done.stderr[-2000:]


# --- OpenRLHF -------------------------------------------------------------------------------------


def _experience_info(rewards_info: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Reproduced from OpenRLHF 0.11.2 (openrlhf/utils/agent.py SingleTurnAgentExecutor.execute, then
    openrlhf/trainer/ppo_utils/samples_generator.py _process_response_into_experience), which imports
    vllm and cannot be imported here: how a reward answer becomes tensors."""
    score_value = rewards_info.get("scores")
    if score_value is None:
        score_value = rewards_info.get("rewards")
    reward_val, score_val, extra_logs = rewards_info.get("rewards"), score_value, rewards_info.get("extra_logs") or {}
    info = {"reward": torch.tensor([reward_val]), "score": torch.tensor([score_val])}
    for key, value in extra_logs.items():
        if isinstance(value, torch.Tensor):
            value = value.flatten()[0].item()
        info[key] = torch.tensor([value])
    return info


def test_openrlhf_loads_the_reward_func_file_and_its_answer_becomes_tensors() -> None:
    from openrlhf.utils.agent import SingleTurnAgentExecutor

    executor = SingleTurnAgentExecutor(remote_rm_url=str(ADAPTERS / "openrlhf_reward.py"))
    prompt = "Optimise:\n"
    answers = asyncio.run(
        executor._fetch_rewards_via_func(
            [prompt + completion(CANDIDATE), prompt + completion(CHEAT)], [prompt, prompt], [REFERENCE, REFERENCE]
        )
    )
    info = [_experience_info(answer) for answer in answers]  # OpenRLHF sends one query per call
    assert [i["reward"].item() for i in info] == [1.0, -1.0]
    assert [i["score"].item() for i in info] == [1.0, 0.0]  # 0-1
    assert info[1]["cheating"].item() == 1.0 and info[0]["correct"].item() == 1.0


def test_openrlhf_calls_the_endpoint_with_the_key_in_its_url(keyed_url: str) -> None:
    from openrlhf.utils.agent import SingleTurnAgentExecutor

    prompt = f"Rewrite with Triton:\n```python\n{REFERENCE}```\n"
    executor = SingleTurnAgentExecutor(remote_rm_url=f"{keyed_url}/v1/openrlhf/reward?api_key={KEY}")
    (answer,) = asyncio.run(executor._fetch_rewards_via_http([prompt + completion(WRONG)], [prompt], [None]))
    info = _experience_info(answer)  # strings in extra_logs failed here with "too many dimensions 'str'"
    assert info["reward"].item() == 0.0 and info["score"].item() == 0.0 and info["compiled"].item() == 1.0
    assert answer["verdicts"] == ["incorrect"]
