"""What a succeeded job leaves behind: its weights as .safetensors, torch.nn names, with metadata
that says which network, input and labels they belong to (the file alone is enough)."""
from __future__ import annotations

import json
from typing import Any

from safetensors.torch import save as save_safetensors

from core.jobspec import JobRequest
from engine import Model

WEIGHTS_FORMAT = "chainrule.weights"


def weights_bytes(model: Model, request: JobRequest, input_shape: list[int] | tuple[int, ...], task: str,
                  classes: list[Any] | None, tokenizer: dict[str, Any] | None = None) -> bytes:
    """The trained state_dict, CPU and contiguous (loads with load_state_dict(strict=True))."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "format": "pt",
        WEIGHTS_FORMAT: "1",
        "model_spec": json.dumps(model.spec.model_dump(mode="json")),   # with its preprocessing layers
        "input_shape": json.dumps([int(d) for d in input_shape]),
        "output_shape": json.dumps(list(model.output_shape)),
        "dtype": request.dtype,
        "task": task,
        "classes": json.dumps(classes),
    }
    if tokenizer is not None:               # the ids' text travels with the weights (engine.text.Tokenizer.from_dict)
        metadata["tokenizer"] = json.dumps(tokenizer)
    return save_safetensors(tensors, metadata=metadata)
