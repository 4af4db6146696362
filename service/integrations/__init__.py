"""Adapters for RL trainers (verl, TRL, OpenRLHF): a raw completion in, a reward out.

Each adapter talks to a Referee server over HTTP (`REFEREE_URL`, `REFEREE_API_KEY`), extracts the
candidate from the completion (`service.completions`) and turns the result document into a score.
`tokens` assigns the hierarchical (tritonrl) rewards to tokens. Nothing here imports the server
stack (fastapi, redis, rq...) except `openrlhf`, the server's OpenRLHF endpoint.
"""

from triton_referee.service.client import RefereeUnavailable
from triton_referee.service.integrations._common import (
    RefereeInfrastructureError,
    RefereeScorer,
    Scored,
    problem_spec,
    scorer_from_env,
)

__all__ = ["RefereeInfrastructureError", "RefereeScorer", "RefereeUnavailable", "Scored", "problem_spec", "scorer_from_env"]
