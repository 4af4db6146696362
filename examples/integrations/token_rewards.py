"""TritonRL's hierarchical reward on tokens (python examples/integrations/token_rewards.py).

    from triton_referee.service.integrations.trl import token_level_rewards
    per_token = token_level_rewards(completion_ids, tokenizer, problems)   # one list per completion

The code block's tokens get `rewards.correctness`, the plan's `rewards.speedup` (0 on the CPU, which
times nothing). A small BPE tokenizer is trained here on the completion itself (the `tokenizers`
package); a trainer passes its model's tokenizer.
"""

from _common import COMPLETION, REFERENCE, referee_server
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from triton_referee.service.integrations.trl import token_level_rewards

bpe = Tokenizer(models.BPE())
bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
bpe.decoder = decoders.ByteLevel()
bpe.train_from_iterator(
    [COMPLETION] * 10, trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
)
ids = bpe.encode(COMPLETION).ids

with referee_server():
    (rewards,) = token_level_rewards([ids], bpe, [REFERENCE])
    assert rewards is not None and len(rewards) == len(ids)
    code = [i for i, r in enumerate(rewards) if r == 1.0]
    print(
        f"{len(ids)} tokens: {len(code)} code tokens get correctness 1.0, {len(ids) - len(code)} plan tokens get speedup {rewards[0]}"
    )
    print("code starts:", repr(bpe.decode(ids[code[0] : code[0] + 8])))
    assert bpe.decode(ids[code[0] : code[-1] + 1]).strip().startswith("import torch")
