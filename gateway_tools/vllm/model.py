"""Build a tiny random-weight Llama model directory that vLLM's CPU build can serve.

Why: the real-engine tests need a model with real scheduling, KV cache and
prefix-cache behaviour, on 2 CPU cores, without downloading weights. The model
is a ``transformers`` ``LlamaConfig`` (hidden 256, 4 heads of size 64 -- the
CPU attention kernel rejects head size 16 --, 2 layers) with random weights
and a 512-token byte-level BPE tokenizer trained here on a built-in corpus,
plus a chat template so ``/v1/chat/completions`` works. The output is
gibberish; the engine's queues, KV blocks and prefix hashes are real.

Needs ``transformers``, ``tokenizers`` and ``torch`` (the vLLM venv has them):
run it with that venv's python, ``python -m gateway_tools.vllm build-model DIR``.
"""

from __future__ import annotations

import json
from pathlib import Path

VOCAB_SIZE = 512
HIDDEN = 256
HEADS = 4  # head size 64
LAYERS = 2
MAX_POSITIONS = 4096
SPECIAL = ["<unk>", "<s>", "</s>", "<pad>"]

# A few sentences of varied English, repeated: enough for a 512-token BPE.
_CORPUS = """\
The gateway routes each request to a model server or an API provider.
A pool of model servers shares one model; the endpoint picker reads their queues and caches.
Continuous batching lets a server decode many sequences in one step.
The key-value cache keeps the attention state of every token a sequence has seen.
Prefix caching reuses the cached blocks of a prompt that starts like an earlier one.
When the cache is full, the scheduler evicts the least recently used blocks.
Time to first token is the prefill; time per output token is the decode step.
Tenants share long system prompts, so routing a tenant to the same server saves prefill.
Capacity planning asks how many servers meet the latency objective at the peak hour.
Traffic that the servers cannot take spills over to a hosted API at a price per token.
You are a helpful assistant. Answer the question briefly and clearly.
What is the capital of France? Paris is the capital of France.
Write a function that adds two numbers and returns the sum.
def add(a, b):
    return a + b
0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 100 1000
"""

# Llama-2 style: one turn per message, assistant turn opened at the end.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


def ensure_model(out: Path | str, seed: int = 0) -> Path:
    """The model in ``out``, built only if it is not there yet (same shape and seed): fixtures reuse it."""
    marker = Path(out) / "gateway_tiny_llama.json"
    try:
        if json.loads(marker.read_text()) == _shape(seed):
            return Path(out)
    except (OSError, ValueError):
        pass
    return build_model(out, seed)


def _shape(seed: int) -> dict[str, int]:
    return {"vocab": VOCAB_SIZE, "hidden": HIDDEN, "heads": HEADS, "layers": LAYERS, "seed": seed}


def build_model(out: Path | str, seed: int = 0) -> Path:
    """Write config, random safetensors weights and the tokenizer into ``out``; returns it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS] * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=MAX_POSITIONS,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)

    config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
        max_position_embeddings=MAX_POSITIONS,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    # Record what built it, so a stale directory is recognisable.
    (out / "gateway_tiny_llama.json").write_text(json.dumps(_shape(seed)))
    return out
