"""What bench/engine_vs_torch.py trains: the networks of its main table and the layers of its
per-layer table, each at the size it runs at in those networks."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    name: str
    layers: list[dict]
    input_shape: tuple[int, ...]
    batch: int
    classes: int = 10


def _t(kind: str, **kw) -> dict:
    return {"type": kind, **kw}


def _conv(channels: int, kernel: int = 3, stride: int = 1, padding: int = 1, **kw) -> dict:
    return _t("conv2d", out_channels=channels, kernel_size=kernel, stride=stride, padding=padding, **kw)


def _block(name: str, source: str, channels: int, stride: int = 1) -> list[dict]:
    """A ResNet basic block: conv-bn-relu-conv-bn, plus the input (projected when the shape changes), relu."""
    layers = [_conv(channels, stride=stride, name=f"{name}_conv1", inputs=[source]), _t("batchnorm", name=f"{name}_bn1"),
              _t("relu", name=f"{name}_relu"), _conv(channels, name=f"{name}_conv2"), _t("batchnorm", name=f"{name}_bn2")]
    skip = source
    if stride != 1:
        layers += [_conv(channels, kernel=1, stride=stride, padding=0, name=f"{name}_proj", inputs=[source]),
                   _t("batchnorm", name=f"{name}_proj_bn")]
        skip = f"{name}_proj_bn"
    return layers + [_t("add", name=f"{name}_add", inputs=[f"{name}_bn2", skip]), _t("relu", name=f"{name}_out")]


_RESNET = ([_conv(16, name="stem", inputs=["input"]), _t("batchnorm", name="stem_bn"), _t("relu", name="stem_relu")]
           + _block("b1", "stem_relu", 16) + _block("b2", "b1_out", 32, stride=2)
           + [_t("avgpool2d", kernel_size=16, name="pool"), _t("flatten", name="flat"),
              _t("linear", out_features=10, name="fc")])

CASES = [
    Case("tiny MLP", [_t("linear", out_features=64), _t("relu"), _t("linear", out_features=10)], (64,), 32),
    Case("MNIST MLP", [_t("linear", out_features=128), _t("relu"), _t("linear", out_features=10)], (784,), 64),
    Case("wide MLP", [_t("linear", out_features=1024), _t("relu"), _t("linear", out_features=1024), _t("relu"),
                      _t("linear", out_features=10)], (1024,), 1024),
    Case("small CNN", [_conv(8), _t("relu"), _t("maxpool2d", kernel_size=2), _conv(16), _t("relu"),
                       _t("maxpool2d", kernel_size=2), _t("flatten"), _t("linear", out_features=10)], (1, 28, 28), 64),
    # the networks people train: batchnorm, layernorm, GELU, leaky ReLU, a residual DAG
    Case("BN CNN", [_conv(32), _t("batchnorm"), _t("leaky_relu"), _t("maxpool2d", kernel_size=2),
                    _conv(64), _t("batchnorm"), _t("leaky_relu"), _t("maxpool2d", kernel_size=2),
                    _t("flatten"), _t("linear", out_features=10)], (3, 32, 32), 64),
    Case("LN MLP", [_t("linear", out_features=512), _t("layernorm"), _t("gelu"),
                    _t("linear", out_features=512), _t("layernorm"), _t("gelu"), _t("linear", out_features=10)],
         (784,), 256),
    Case("ResNet DAG", _RESNET, (3, 32, 32), 64),
]

SWEEP_CASE = "MNIST MLP"
SWEEP_BATCHES = (1, 4, 16, 64, 256, 1024, 4096)


@dataclass(frozen=True)
class LayerCase:
    """One layer type at the size a network above runs it: `inputs` shapes without the batch dim."""
    name: str
    spec: dict
    inputs: tuple[tuple[int, ...], ...]
    batch: int


_IMAGE = ((32, 32, 32),)     # BN CNN's first block: (64, 32, 32, 32)
_ROWS = ((512,),)            # LN MLP's hidden rows: (256, 512)

LAYER_CASES = [
    LayerCase("linear", _t("linear", out_features=512), ((784,),), 256),
    LayerCase("conv2d", _conv(64), ((32, 16, 16),), 64),
    LayerCase("batchnorm2d", _t("batchnorm"), _IMAGE, 64),
    LayerCase("batchnorm1d", _t("batchnorm"), _ROWS, 256),
    LayerCase("layernorm", _t("layernorm"), _ROWS, 256),
    LayerCase("relu", _t("relu"), _IMAGE, 64),
    LayerCase("leaky_relu", _t("leaky_relu"), _IMAGE, 64),
    LayerCase("gelu", _t("gelu"), _ROWS, 256),
    LayerCase("gelu tanh", _t("gelu", approximate="tanh"), _ROWS, 256),
    LayerCase("tanh", _t("tanh"), _ROWS, 256),
    LayerCase("sigmoid", _t("sigmoid"), _ROWS, 256),
    LayerCase("softmax", _t("softmax"), _ROWS, 256),
    LayerCase("dropout", _t("dropout", p=0.1), _ROWS, 256),
    LayerCase("maxpool2d", _t("maxpool2d", kernel_size=2), _IMAGE, 64),
    LayerCase("avgpool2d", _t("avgpool2d", kernel_size=2), _IMAGE, 64),
    LayerCase("add", _t("add"), ((16, 32, 32), (16, 32, 32)), 64),
    LayerCase("concat", _t("concat"), ((16, 32, 32), (16, 32, 32)), 64),
]
