"""A character-level GPT, the engine against torch: nanoGPT's CPU configuration of its
shakespeare_char run (4 layers, 4 heads, 128-dim, context 64, batch 12, dropout 0), AdamW.

Three sides train the same network from the same weights on the same windows:
  engine         chainrule's Model + TrainStep (hand-written backward, no autograd)
  torch eager    chainrule.twin (nn.Embedding, nn.MultiheadAttention, nn.LayerNorm, nn.Linear) + autograd
                 + torch.optim.AdamW (foreach)
  torch.compile  the same module through torch.compile

Step time (interleaved rounds, medians), tokens/s, and peak / persistent memory per step
(torch's allocator events, bench/memory_use.py). With --learn N both the engine and torch eager
train N steps on the text and print the validation loss every N/10 steps (same seed, same windows).

    python -m bench.gpt_char [--text PATH] [--rounds 5] [--round-s 3] [--learn 2000] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from chainrule.twin import twin
from engine import Model, losses, optim
from engine.text import Tokenizer
from engine.train import TrainStep

from .memory_use import measure
from .rounds import Side, interleave

CONTEXT, BATCH, DIM, HEADS, LAYERS, LR = 64, 12, 128, 4, 4, 1e-3


def gpt_spec(vocab: int) -> dict:
    """nanoGPT's model (bias on, dropout 0, a tied head), as a chainrule spec."""
    block = [
        {"type": "layernorm", "name": "ln_1"},
        {"type": "self_attention", "name": "attn", "num_heads": HEADS},
        {"type": "add", "name": "res_1", "inputs": ["input", "attn"]},
        {"type": "layernorm", "name": "ln_2"},
        {"type": "linear", "name": "c_fc", "out_features": 4 * DIM},
        {"type": "gelu", "name": "gelu"},
        {"type": "linear", "name": "c_proj", "out_features": DIM},
        {"type": "add", "name": "res_2", "inputs": ["res_1", "c_proj"]},
    ]
    return {"layers": [
        {"type": "embedding", "name": "wte", "num_embeddings": vocab, "embedding_dim": DIM, "init_std": 0.02},
        {"type": "position_embedding", "name": "wpe", "max_len": CONTEXT, "init_std": 0.02},
        {"type": "repeat", "name": "h", "times": LAYERS, "layers": block},
        {"type": "layernorm", "name": "ln_f"},
        {"type": "linear", "name": "lm_head", "out_features": vocab, "bias": False, "tie_to": "wte"},
    ]}


def corpus(path: str | None) -> tuple[torch.Tensor, int]:
    """(ids, vocabulary size) of a text, character-level; random ids over 65 characters without one."""
    if path is None:
        return torch.randint(0, 65, (200_000,), generator=torch.Generator().manual_seed(0)), 65
    text = Path(path).read_text(encoding="utf-8")
    tokenizer = Tokenizer.char(text)
    return torch.tensor(tokenizer.encode(text), dtype=torch.int64), tokenizer.vocab_size


def windows(ids: torch.Tensor, g: torch.Generator, n: int = BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    start = torch.randint(0, ids.numel() - CONTEXT - 1, (n,), generator=g)
    rows = start.unsqueeze(1) + torch.arange(CONTEXT)
    return ids[rows], ids[rows + 1]


def sides(ids: torch.Tensor, vocab: int, compile_too: bool = True):
    """Step functions over a fixed cycle of batches: name -> (make_step, grad)."""
    spec = gpt_spec(vocab)
    data = [windows(ids, torch.Generator().manual_seed(k)) for k in range(8)]

    def make_engine():
        model = Model.from_spec(spec, (CONTEXT,), seed=0)
        step = TrainStep(model, losses.make("cross_entropy"),
                         optim.make({"type": "adamw", "lr": LR}, model.parameters()))
        count = iter(range(10**12))
        return lambda: step(*data[next(count) % len(data)])

    def make_torch(compiled: bool):
        def make():
            model = Model.from_spec(spec, (CONTEXT,), seed=0)
            net = twin(spec, (CONTEXT,))
            net.load_state_dict(model.state_dict(), strict=True)
            opt = torch.optim.AdamW(net.parameters(), lr=LR, foreach=True)
            forward = torch.compile(net) if compiled else net
            count = iter(range(10**12))

            def step():
                x, y = data[next(count) % len(data)]
                loss = F.cross_entropy(forward(x).reshape(-1, vocab), y.reshape(-1))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                return loss
            return step
        return make

    out = {"engine": (make_engine, False), "torch eager": (make_torch(False), True)}
    if compile_too:
        out["torch.compile"] = (make_torch(True), True)
    return out


def learn(ids: torch.Tensor, vocab: int, steps: int) -> list[tuple[int, float, float]]:
    """(step, engine val loss, torch eager val loss) every steps/10: same weights, same windows."""
    spec = gpt_spec(vocab)
    n_val = ids.numel() // 10
    train, val = ids[:-n_val], ids[-n_val:]
    model = Model.from_spec(spec, (CONTEXT,), seed=0)
    net = twin(spec, (CONTEXT,))
    net.load_state_dict(model.state_dict(), strict=True)
    step = TrainStep(model, losses.make("cross_entropy"), optim.make({"type": "adamw", "lr": LR}, model.parameters()))
    opt = torch.optim.AdamW(net.parameters(), lr=LR, foreach=True)
    g, val_g = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    val_batches = [windows(val, val_g) for _ in range(20)]
    curve = []
    for k in range(1, steps + 1):
        x, y = windows(train, g)
        step(x, y)
        loss = F.cross_entropy(net(x).reshape(-1, vocab), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if k % max(steps // 10, 1) == 0:
            with torch.no_grad():
                ours = sum(float(losses.make("cross_entropy").forward(model.predict(x), y)) for x, y in val_batches)
                theirs = sum(float(F.cross_entropy(net.eval()(x).reshape(-1, vocab), y.reshape(-1)))
                             for x, y in val_batches)
                net.train()
            curve.append((k, ours / len(val_batches), theirs / len(val_batches)))
            print(f"step {k:5d}  val loss engine {curve[-1][1]:.4f}  torch {curve[-1][2]:.4f}", flush=True)
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text", help="a UTF-8 text file (character-level); absent: random ids over 65 characters")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--round-s", type=float, default=3.0)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--learn", type=int, default=0, help="train this many steps on both sides and compare")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ids, vocab = corpus(args.text)
    built = sides(ids, vocab, compile_too=not args.no_compile)
    report: dict = {"config": {"context": CONTEXT, "batch": BATCH, "dim": DIM, "heads": HEADS, "layers": LAYERS,
                               "vocab": vocab, "threads": torch.get_num_threads()}}
    memory = {name: measure(make, grad, torch.device("cpu")) for name, (make, grad) in built.items()
              if name != "torch.compile"}
    runs = interleave({name: Side(make(), grad) for name, (make, grad) in built.items()},
                      args.rounds, args.round_s, warmup_s=args.round_s, device=torch.device("cpu"))
    print(f"{'side':15s} {'ms/step':>9s} {'tokens/s':>10s} {'vs eager':>9s} {'peak MB':>8s} {'kept MB':>8s}")
    for name in built:
        rate = runs.median(name)
        mem = memory.get(name)
        row = {"ms_per_step": 1000 / rate, "tokens_per_s": rate * BATCH * CONTEXT,
               "vs_eager": runs.ratio(name, "torch eager"), "vs_eager_range": runs.ratio_range(name, "torch eager")}
        if mem is not None:
            row.update(peak_mb=mem.peak / 2**20, persistent_mb=mem.persistent / 2**20)
        report[name] = row
        print(f"{name:15s} {row['ms_per_step']:9.2f} {row['tokens_per_s']:10.0f} {row['vs_eager']:8.2f}x "
              f"{row.get('peak_mb', math.nan):8.1f} {row.get('persistent_mb', math.nan):8.1f}")
    if args.learn:
        report["learn"] = learn(ids, vocab, args.learn)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
