"""OpenRLHF's remote reward model call (python examples/integrations/openrlhf_reward.py).

OpenRLHF: --remote_rm_url http://referee:8000/v1/openrlhf/reward [--label_key reference]
It posts the queries (prompt + response) and prompts; without labels the reference is read from
the prompt's fenced block that defines `class Model`. In Redis mode the key goes in the URL
(`...reward?api_key=KEY`), or use the client-side reward_func file
(`--remote_rm_url .../service/integrations/openrlhf_reward.py` with REFEREE_API_KEY set).
"""

import httpx
from _common import COMPLETION, REFERENCE, WRONG_COMPLETION, referee_server

PROMPT = f"Rewrite this PyTorch model with Triton kernels as ModelNew:\n\n```python\n{REFERENCE}```\n"

with referee_server() as url:
    body = {"query": [PROMPT + COMPLETION, PROMPT + WRONG_COMPLETION], "prompts": [PROMPT, PROMPT]}
    answer = httpx.post(f"{url}/v1/openrlhf/reward", json=body, timeout=900).json()
    print(f"rewards {answer['rewards']}, scores {answer['scores']}, verdicts {answer['verdicts']}")
    assert answer["rewards"] == [1.0, 0.0]
