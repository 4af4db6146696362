"""verl's custom reward function on two completions (python examples/integrations/verl_reward.py).

In a verl config:
    custom_reward_function: {path: service/integrations/verl.py, name: compute_score}
with REFEREE_URL pointing at a Referee server and the reference source as reward_model.ground_truth.
"""

from _common import COMPLETION, REFERENCE, WRONG_COMPLETION, referee_server

from triton_referee.service.integrations.verl import compute_score, compute_score_batch

with referee_server() as url:
    print(f"Referee at {url}")
    scored = compute_score("kernelbench/relu", COMPLETION, REFERENCE)
    print(f"honest: score {scored['score']} ({scored['verdict']}) - {scored['feedback']}")
    for name, item in zip(
        ["honest", "wrong"],
        compute_score_batch(["kb", "kb"], [COMPLETION, WRONG_COMPLETION], [REFERENCE, REFERENCE]),
        strict=True,
    ):
        print(f"batch {name}: score {item['score']} ({item['verdict']})")
    assert scored["score"] == 1.0
