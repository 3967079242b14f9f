"""Spec types: what a user sends as JSON, as pydantic models.

Layer `type` is the snake_case of the PyTorch layer and fields use PyTorch's
constructor argument names and defaults, so `{"type": "linear", "out_features": 10}`
reads like `nn.Linear(in_features, 10)` with `in_features` inferred from the input.
Losses, optimizers and schedules follow torch.nn / torch.optim the same way.

Every union is discriminated on `type`, so the OpenAPI schema (Swagger) lists the
whole catalogue with fields and defaults, and a bad spec is a 422 pointing at the field.
Structural rules of the graph (names, inputs, merges, softmax placement) are checked
here; shape rules need the input shape and live in `engine.model.plan`.
"""
from .base import Spec
from .diagnostics import RULES, Diagnostics, Rules
from .layers import (INPUT, GELU, Add, AvgPool2d, BatchNorm, Concat, Conv1d, Conv2d, Dropout, Embedding, Flatten,
                     InitName, LayerBase, LayerNorm, LayerSpec, LeakyReLU, Linear, MaxPool2d, Pad2, PositionEmbedding,
                     ReLU, SelfAttention, SeqPool, Sigmoid, Size2, Softmax, Standardize, Tanh, pair)
from .model import MERGE_TYPES, ModelSpec, Repeat
from .training import (SGD, Adam, AdamW, BCEWithLogitsLoss, ConstantLR, CosineAnnealingLR, CrossEntropyLoss,
                       EarlyStopping, ExponentialLR, HuberLoss, L1Loss, LossSpec, MSELoss, OptimizerSpec,
                       RMSprop, ScheduleBase, ScheduleSpec, StepLR, TrainConfig)

__all__ = ["Spec", "INPUT", "MERGE_TYPES", "InitName", "Size2", "Pad2", "pair", "LayerBase", "Linear", "Conv2d",
           "MaxPool2d", "AvgPool2d", "Flatten", "BatchNorm", "LayerNorm", "Dropout", "ReLU", "LeakyReLU",
           "Sigmoid", "Tanh", "GELU", "Softmax", "Add", "Concat", "Conv1d", "SeqPool", "Embedding",
           "PositionEmbedding", "SelfAttention", "Standardize", "Repeat", "LayerSpec", "ModelSpec",
           "CrossEntropyLoss", "MSELoss", "L1Loss", "HuberLoss", "BCEWithLogitsLoss", "LossSpec", "SGD",
           "RMSprop", "Adam", "AdamW", "OptimizerSpec", "ScheduleBase", "ConstantLR", "StepLR",
           "ExponentialLR", "CosineAnnealingLR", "ScheduleSpec", "EarlyStopping", "TrainConfig", "Diagnostics", "Rules", "RULES"]
