"""The Python client: one evaluation, then many with bounded concurrency, sync and async
(python examples/integrations/client_evaluate_many.py)."""

import asyncio

from _common import CANDIDATE, COMPLETION, REFERENCE, WRONG_COMPLETION, referee_server

from triton_referee.service.client import AsyncRefereeClient, RefereeClient
from triton_referee.service.completions import extract_candidate

OPTIONS = {"trials": 2, "timing_sets": 1, "max_timing_seconds": 0.1}

with referee_server() as url:
    with RefereeClient(url) as client:
        result = client.evaluate(REFERENCE, CANDIDATE, **OPTIONS)
        print(f"one: {result.verdict.value}, reward {result.reward}, {result.timings_ms.total / 1e3:.1f} s")
        bodies = [{"reference": REFERENCE, "candidate": extract_candidate(c), **OPTIONS} for c in (COMPLETION, WRONG_COMPLETION)]
        for r in client.evaluate_many(bodies, concurrency=2):
            print(f"many: {r.verdict.value}: {r.feedback.splitlines()[0]}")

    async def main() -> None:
        async with AsyncRefereeClient(url) as client:
            results = await client.evaluate_many(bodies, concurrency=2)
            print("async:", [r.verdict.value for r in results])

    asyncio.run(main())
