"""Sequence models the tests share: a nanoGPT-shaped spec (pre-norm blocks, a tied head) and windows."""
from __future__ import annotations

import torch


def layer(type_, **kw):
    return {"type": type_, **kw}


def gpt_block(dim=8, heads=2, dropout=0.0) -> list[dict]:
    """nanoGPT's block: x + attn(ln_1(x)), then + proj(gelu(fc(ln_2(.)))) with a 4x wide MLP."""
    return [
        layer("layernorm", name="ln_1"),
        layer("self_attention", name="attn", num_heads=heads, dropout=dropout),
        layer("add", name="res_1", inputs=["input", "attn"]),
        layer("layernorm", name="ln_2"),
        layer("linear", name="fc", out_features=4 * dim),
        layer("gelu", name="gelu"),
        layer("linear", name="proj", out_features=dim),
        layer("add", name="res_2", inputs=["res_1", "proj"]),
    ]


GPT_BLOCK = gpt_block()


def gpt(vocab=11, dim=8, context=6, blocks=2, heads=2, dropout=0.0, init_std=None):
    """A GPT spec: token and learned position embeddings, `blocks` blocks, a final layernorm, a tied head."""
    return {"layers": [
        layer("embedding", name="wte", num_embeddings=vocab, embedding_dim=dim, init_std=init_std),
        layer("position_embedding", name="wpe", max_len=context, init_std=init_std),
        {"type": "repeat", "name": "blocks", "times": blocks, "layers": gpt_block(dim, heads, dropout)},
        layer("layernorm", name="ln_f"),
        layer("linear", name="lm_head", out_features=vocab, bias=False, tie_to="wte"),
    ]}


def windows(text: torch.Tensor, n: int, t: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n random windows of t ids, and each window shifted by one (the next token at every position)."""
    start = torch.randint(0, text.numel() - t - 1, (n,), generator=g)
    rows = start.unsqueeze(1) + torch.arange(t)
    return text[rows], text[rows + 1]
