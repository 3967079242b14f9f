"""The attention rules: what each head's attention entropy says after an epoch (engine.diagnostics.stats
measures it: per head, the mean over queries of -sum_j P_ij log P_ij, beside the uniform value).

    attention_collapsed   a head whose entropy is under `threshold` nats looks at one token per query.
                          One such head can be a learned pattern (the previous token); many, early,
                          are the entropy collapse that precedes a transformer's loss spikes.
    attention_uniform     a head whose entropy stays above `threshold` of the uniform value spreads
                          its weight evenly over every token it may see: it averages and has not
                          learned where to look (as every head starts, from small initial weights).

Each gives one signal per attention layer, naming its heads, so a layer with several such heads is
one finding.
"""
from __future__ import annotations

import math
from typing import Any

from .findings import Signal, layer_label
from .trace import Trace


def _heads(trace: Trace) -> list[tuple[str, list[float], float]]:
    """(key, entropy per head, uniform entropy) of every attention layer measured this epoch."""
    out = []
    for key, e in trace.now["layers"].items():
        ent, top = e.get("attention_entropy"), e.get("attention_entropy_max")
        if isinstance(ent, list) and ent and isinstance(top, (int, float)) and math.isfinite(top) and top > 0:
            out.append((key, ent, top))
    return out


def _which(heads: list[int], n: int) -> str:
    return f"head {heads[0]} of {n}" if len(heads) == 1 else f"heads {', '.join(map(str, heads))} of {n}"


def attention_collapsed(cfg: Any, trace: Trace) -> list[Signal]:
    out = []
    for key, ent, top in _heads(trace):
        low = [h for h, v in enumerate(ent) if math.isfinite(v) and v < cfg.threshold]
        if not low:
            continue
        worst = min(ent[h] for h in low)
        out.append(Signal(key, worst, cfg.threshold,
                          f"{layer_label(key, trace.now['layers'][key]['type'])}: {_which(low, len(ent))} have "
                          f"attention entropy {', '.join(f'{ent[h]:.3g}' for h in low)} nats (uniform would be "
                          f"{top:.3g}): each query puts almost all its weight on one token. A single head doing "
                          "this can be a learned pattern, such as the previous token; many, early in training, "
                          "are the entropy collapse that comes before loss spikes",
                          "if the loss is unstable: lower lr or add warm-up (schedule.warmup_steps), keep "
                          "grad_clip_norm, and put a layernorm before the attention"))
    return out


def attention_uniform(cfg: Any, trace: Trace) -> list[Signal]:
    out = []
    for key, ent, top in _heads(trace):
        flat = [h for h, v in enumerate(ent) if math.isfinite(v) and v / top > cfg.threshold]
        if not flat:
            continue
        ratio = max(ent[h] / top for h in flat)
        out.append(Signal(key, ratio, cfg.threshold,
                          f"{layer_label(key, trace.now['layers'][key]['type'])}: {_which(flat, len(ent))} have "
                          f"attention entropy within {1 - ratio:.1%} of the uniform {top:.3g} nats, for "
                          f"{cfg.consecutive} epochs: each query spreads its weight evenly over every token it "
                          "may see, so the head averages and has not learned where to look",
                          "train longer or with a larger lr; check that the data has structure across "
                          "positions (a shuffled text has none); fewer heads may do"))
    return out
