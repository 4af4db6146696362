"""Adapters for RL trainers (verl, TRL, OpenRLHF): a raw completion in, a reward out.

Each adapter talks to a Referee server over HTTP (`REFEREE_URL`, `REFEREE_API_KEY`), extracts the
candidate from the completion (`service.completions`) and turns the result document into a score.
"""

from ._common import RefereeScorer, problem_spec, scorer_from_env

__all__ = ["RefereeScorer", "problem_spec", "scorer_from_env"]
