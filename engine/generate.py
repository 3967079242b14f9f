"""Text generation from a language model (nanoGPT's `generate`): append one sampled id at a time.

    ids = generate(model, prompt_ids, max_new_tokens=100, temperature=0.8, top_k=40, seed=0)

Each step runs an eval-mode forward on the last `context` ids (the model's input length), takes
the logits of the last position, divides them by the temperature, keeps the top_k largest, and
draws from their softmax with a generator seeded by `seed`. temperature=0 is greedy: the argmax.
"""
from __future__ import annotations

import torch
from torch import Tensor

MAX_TEMPERATURE = 100.0


@torch.no_grad()
def generate(model, prompt: Tensor, *, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
             seed: int = 0) -> Tensor:
    """prompt (T0,) int64 ids, T0 >= 1 -> (T0 + max_new_tokens,) ids. ValueError for bad arguments."""
    if model.input_dtype != torch.int64 or len(model.input_shape) != 1 or len(model.output_shape) != 2:
        raise ValueError(f"generation needs a language model (token ids (N, T) in, (N, T, vocabulary) logits "
                         f"out); this model maps {tuple(model.input_shape)} to {tuple(model.output_shape)}")
    if prompt.dim() != 1 or prompt.numel() == 0:
        raise ValueError(f"the prompt must be a non-empty 1-D sequence of ids, got shape {tuple(prompt.shape)}")
    if not 0 <= temperature <= MAX_TEMPERATURE:
        raise ValueError(f"temperature {temperature} is out of range; valid: 0 (greedy) to {MAX_TEMPERATURE}")
    vocab = model.output_shape[-1]
    if top_k is not None and not 1 <= top_k <= vocab:
        raise ValueError(f"top_k {top_k} is out of range; valid: 1 to the vocabulary size {vocab}")
    model.check_ids(prompt)
    context = model.input_shape[0]
    generator = torch.Generator(device=model.device).manual_seed(seed)
    ids = prompt.to(model.device, torch.int64)
    for _ in range(max_new_tokens):
        window = ids[-context:].unsqueeze(0)                                   # (1, T <= context)
        logits = model.forward(window, training=False)[0, -1]                  # (V,) the last position's
        ids = torch.cat([ids, _next(logits, temperature, top_k, generator).view(1)])
    return ids.cpu()


def _next(logits: Tensor, temperature: float, top_k: int | None, generator: torch.Generator) -> Tensor:
    if temperature == 0:
        return logits.argmax()
    logits = logits.double() / temperature
    if top_k is not None:
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[0]
