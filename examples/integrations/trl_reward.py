"""TRL's GRPO reward function on a group of completions (python examples/integrations/trl_reward.py).

reward = make_reward_function(url="http://referee:8000", reference_column="reference")
GRPOTrainer(model=..., reward_funcs=[reward], train_dataset=dataset_with_a_reference_column)
"""

from _common import COMPLETION, REFERENCE, WRONG_COMPLETION, referee_server

from triton_referee.service.integrations.trl import make_reward_function

with referee_server():
    reward = make_reward_function(reference_column="reference")
    conversational = [{"role": "assistant", "content": COMPLETION}]
    completions = [COMPLETION, WRONG_COMPLETION, conversational, "Sorry, I cannot write this kernel."]
    rewards = reward(completions, prompts=["Write ReLU in Triton"] * 4, reference=[REFERENCE] * 4)
    print(f"{reward.__name__}: {rewards}")
    assert rewards == [1.0, 0.0, 1.0, 0.0]
