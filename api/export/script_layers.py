"""Each layer of a job as the script writes it: the torch.nn constructor (what chainrule.twin builds,
as source text) and the lines that give it the engine's initial values (engine/init.py, drawn in the
same order from a generator seeded with the job's seed)."""
from __future__ import annotations

from dataclasses import dataclass, field

from engine.layers import Layer
from engine.planning import Plan, default_init
from engine.spec import pair

# the script's own classes (templates/train_job.py.j2) each layer type needs beyond torch.nn
HELPERS = {"dropout": "Dropout", "standardize": "Standardize", "add": "Add", "concat": "Concat",
           "seq_pool": "SeqPool", "position_embedding": "PositionEmbedding", "self_attention": "SelfAttention"}


@dataclass
class ScriptLayer:
    index: int
    key: str                     # the state_dict prefix: "0" in a sequence, the name in a DAG
    kind: str
    module: str                  # a constructor expression, e.g. "nn.Linear(4, 16)"
    init: list[str] = field(default_factory=list)   # statements on `layer`, the module
    comment: str = ""


def _size(v) -> str:
    a, b = pair(v)
    return str(a) if a == b else f"({a}, {b})"


def _args(*positional, **keywords) -> str:
    """'4, 16, bias=False': keywords equal to torch's default (given as (value, default)) are left out."""
    parts = [str(p) for p in positional]
    parts += [f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, (v, default) in keywords.items()
              if v != default]
    return ", ".join(parts)


def module_expression(spec, in_shape) -> str:
    """The torch.nn module of one layer spec reading `in_shape` (no batch dim), as source text."""
    kind = spec.type
    if kind == "linear":
        return f"nn.Linear({_args(in_shape[-1], spec.out_features, bias=(spec.bias, True))})"
    if kind == "conv2d":
        return (f"nn.Conv2d({in_shape[0]}, {spec.out_channels}, kernel_size={_size(spec.kernel_size)}"
                + (f", stride={_size(spec.stride)}" if pair(spec.stride) != (1, 1) else "")
                + (f", padding={_size(spec.padding)}" if pair(spec.padding) != (0, 0) else "")
                + ("" if spec.bias else ", bias=False") + ")")
    if kind == "conv1d":
        args = _args(in_shape[0], spec.out_channels, kernel_size=(spec.kernel_size, None), stride=(spec.stride, 1),
                     padding=(spec.padding, 0), dilation=(spec.dilation, 1), bias=(spec.bias, True))
        return f"nn.Conv1d({args})"
    if kind in ("maxpool2d", "avgpool2d"):
        name = "nn.MaxPool2d" if kind == "maxpool2d" else "nn.AvgPool2d"
        stride = "" if spec.stride is None else f", stride={_size(spec.stride)}"
        padding = "" if pair(spec.padding) == (0, 0) else f", padding={_size(spec.padding)}"
        return f"{name}({_size(spec.kernel_size)}{stride}{padding})"
    if kind == "batchnorm":
        name = "nn.BatchNorm1d" if len(in_shape) == 1 else "nn.BatchNorm2d"
        args = _args(in_shape[0], eps=(spec.eps, 1e-5), momentum=(spec.momentum, 0.1), affine=(spec.affine, True))
        return f"{name}({args})"
    if kind == "layernorm":
        args = _args(in_shape[-1], eps=(spec.eps, 1e-5), elementwise_affine=(spec.elementwise_affine, True))
        return f"nn.LayerNorm({args})"
    if kind == "flatten":
        return f"nn.Flatten({_args(start_dim=(spec.start_dim, 1), end_dim=(spec.end_dim, -1))})"
    simple = {"relu": "nn.ReLU()", "sigmoid": "nn.Sigmoid()", "tanh": "nn.Tanh()", "add": "Add()"}
    if kind in simple:
        return simple[kind]
    if kind == "leaky_relu":
        return f"nn.LeakyReLU({spec.negative_slope})"
    if kind == "gelu":
        return f"nn.GELU({_args(approximate=(spec.approximate, 'none'))})"
    if kind == "softmax":
        return f"nn.Softmax(dim={spec.dim})"
    if kind == "dropout":
        return f"Dropout({spec.p})"
    if kind == "concat":
        return f"Concat(dim={spec.dim})"
    if kind == "standardize":
        return f"Standardize({_args(in_shape[0], inverse=(spec.inverse, False))})"
    if kind == "seq_pool":
        return f"SeqPool({_args(mode=(spec.mode, None), padding_idx=(spec.padding_idx, None))})"
    if kind == "embedding":
        args = _args(spec.num_embeddings, spec.embedding_dim, padding_idx=(spec.padding_idx, None))
        return f"nn.Embedding({args})"
    if kind == "position_embedding":
        return f"PositionEmbedding({spec.max_len}, {in_shape[-1]}, kind={spec.kind!r})"
    if kind == "self_attention":
        args = _args(in_shape[-1], spec.num_heads, dropout=(spec.dropout, 0.0), bias=(spec.bias, True),
                     causal=(spec.causal, True))
        return f"SelfAttention({args})"
    raise ValueError(f"no torch.nn module for layer type {kind!r}")


def init_lines(graph: Plan, index: int, layer: Layer) -> list[str]:
    """Statements (on `layer`) drawing its initial values as engine.Model does, in the same order."""
    spec, kind = graph.spec.layers[index], graph.spec.layers[index].type
    if kind in ("linear", "conv2d", "conv1d"):
        scheme, gain = default_init(graph, index)
        fan_in, fan_out = layer.fans()
        lines = []
        if graph.spec.tied_index(index) is None:     # a tied weight is its embedding's table, drawn there
            lines.append(f"init_weight(layer.weight, {scheme!r}, gain={gain!r}, fan_in={fan_in}, "
                         f"fan_out={fan_out})")
        if spec.bias:
            lines.append(f"init_bias(layer.bias, {scheme!r}, fan_in={fan_in})")
        return lines
    if kind == "embedding":
        lines = [f"layer.weight.normal_(0.0, {spec.init_std or 1.0!r}, generator=INIT_GENERATOR)"]
        if spec.padding_idx is not None:
            lines.append(f"layer.weight[{spec.padding_idx}].zero_()   # the padding row")
        return lines
    if kind == "position_embedding" and spec.kind == "learned":
        return [f"layer.weight.normal_(0.0, {spec.init_std or 1.0!r}, generator=INIT_GENERATOR)"]
    if kind == "self_attention":
        dim = layer.in_shapes[0][-1]
        lines = [f"init_weight(layer.in_proj_weight, 'xavier_uniform', gain=1.0, fan_in={dim}, "
                 f"fan_out={3 * dim})",
                 f"init_weight(layer.out_proj.weight, 'torch_default', gain=1.0, fan_in={dim}, fan_out={dim})"]
        return lines + (["layer.in_proj_bias.zero_()", "layer.out_proj.bias.zero_()"] if spec.bias else [])
    if kind == "standardize" and spec.mean is not None:
        return [f"layer.mean.copy_(torch.tensor({list(spec.mean)!r}))",
                f"layer.std.copy_(torch.tensor({list(spec.std)!r}))"]
    return []


def script_layers(graph: Plan) -> list[ScriptLayer]:
    out = []
    for i, (key, spec, layer) in enumerate(zip(graph.keys, graph.spec.layers, graph.layers)):
        comment = f"layers[{i}]" + (f" {spec.name!r}" if spec.name else "") + f" {spec.type}: " \
            f"{tuple(layer.in_shapes[0])} -> {tuple(layer.out_shape)}"
        out.append(ScriptLayer(i, key, spec.type, module_expression(spec, layer.in_shapes[0]),
                               init_lines(graph, i, layer), comment))
    return out
