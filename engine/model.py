"""A model: a graph of layers, run forward in order and backward in reverse.

All trainable parameters live in one flat tensor and all gradients in another;
each layer sees views into them under torch.nn's names. The optimizer can then
update every parameter with a handful of kernels on one buffer, and `state_dict()`
still has the exact names and layouts of the equivalent torch.nn.Sequential
(`"0.weight"`, Linear `[out, in]`), or of a module whose attributes are the
DAG layers' names (`chainrule.twin` builds that module).

Gradient convention: layers overwrite their parameter gradients on each backward;
where a tensor feeds several layers (a residual branch), the Model sums the
gradients flowing back into it.

Backward answers the last forward that kept its caches: one with training=True (or
for_backward=True). A forward that keeps nothing (evaluation, `predict`) leaves a pending
training forward's caches as they were, so it may run between that forward and its
backward. A backward with nothing to answer, or with a dout of another shape than that
forward's output, raises BackwardError.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import Tensor

from .layers import Layer
from .planning import INPUT_INDEX, Plan, SpecError, default_init, plan
from .shapes import Shape, format_shape
from .spec import ModelSpec

__all__ = ["Model", "BackwardError", "Observer", "Plan", "SpecError", "plan"]

# observe(key, layer, output): see Model.forward
Observer = Callable[[str, Layer, Tensor], None]

_PASS_THROUGH = ("flatten", "dropout")   # may return their input itself, or a view of it


class BackwardError(RuntimeError):
    """A backward that does not answer the model's last training forward; names the layer."""


class Model:
    """Built by `Model.from_spec`; see the module docstring for the storage layout."""

    def __init__(self, graph: Plan, *, seed: int, dtype: torch.dtype, device: str | torch.device,
                 compile: bool = False):
        self.plan, self.spec, self.keys, self.layers = graph, graph.spec, graph.keys, graph.layers
        self.input_shape, self.output_shape = graph.input_shape, graph.output_shape
        self.dtype, self.device = dtype, torch.device(device)
        self._inputs = graph.inputs
        self._sequential = all(ins == [i - 1] for i, ins in enumerate(graph.inputs))
        self._takes_ids = any(layer.kind == "embedding" and INPUT_INDEX in ins
                              for layer, ins in zip(graph.layers, graph.inputs))
        self._plan_backward(graph)
        self._allocate(graph, seed)
        for layer in self.layers:
            layer.compile = compile
        self._pending: torch.Size | None = None   # output shape of the forward a backward is owed
        self._answered = False                     # a backward has consumed the last training forward
        self._observed = False                     # that forward had an observer: outputs may be held
        self._reuse_allowed = False                # the layers' reuse_output flags are set as _reusable

    def _plan_backward(self, graph: Plan) -> None:
        """What a training backward (no input gradient) may skip."""
        # _leads_to_params[i]: layer i or a layer upstream of it has parameters, so training
        # needs the gradient of its output; the rest of the backward pass only feeds dL/dinput
        self._leads_to_params: list[bool] = []
        for i, layer in enumerate(graph.layers):
            self._leads_to_params.append(bool(layer.param_shapes()) or any(
                j != INPUT_INDEX and self._leads_to_params[j] for j in graph.inputs[i]))
        # layers whose one input needs no gradient in training: they may skip computing dx
        self._input_edge = [layer for i, layer in enumerate(graph.layers) if self._leads_to_params[i]
                            and not layer.merge and not self._wants_grad(graph.inputs[i][0])]
        first = next((i for i, leads in enumerate(self._leads_to_params) if leads), len(graph.layers))
        self._reversed = {True: graph.layers[::-1], False: graph.layers[first:][::-1]}  # by need_input_grad
        # _last_read_by[i]: the outputs (or the input, -1) that layer i is the last layer to read
        last_reader = {j: i for i, ins in enumerate(graph.inputs) for j in ins}
        self._last_read_by = [sorted({j for j in ins if last_reader[j] == i}) for i, ins in enumerate(graph.inputs)]
        # _reusable[i]: no one reads layer i's output after its backward: it is not the model's output,
        # and no reader passes it on as itself or a view (flatten, dropout), which could be the output
        last = len(graph.layers) - 1
        self._reusable = [i != last and all(graph.layers[j].kind not in _PASS_THROUGH for j in graph.consumers(i))
                          for i in range(len(graph.layers))]

    def _allocate(self, graph: Plan, seed: int) -> None:
        """The flat parameter and gradient storage, each layer's views of it, buffers, initial values."""
        total = sum(math.prod(s) for layer in self.layers for s in layer.param_shapes().values())
        self.flat_params = torch.zeros(total, dtype=self.dtype, device=self.device)
        self.flat_grads = torch.zeros(total, dtype=self.dtype, device=self.device)
        self._params: dict[str, Tensor] = {}
        self._grads: dict[str, Tensor] = {}
        self._aliases: dict[str, str] = {}  # a tied weight's name -> its table's (both in the state_dict)
        self._buffers: dict[str, Tensor] = {}
        self._state_keys: list[str] = []  # torch.nn order: per module, parameters then buffers
        offset = 0
        init_gen = torch.Generator().manual_seed(seed)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)  # dropout masks
        for i, (key, layer) in enumerate(zip(self.keys, self.layers)):
            params, grads, buffers = {}, {}, {}
            if graph.spec.tied_index(i) is not None:
                self._tie(key, self.keys[graph.spec.tied_index(i)], layer, params, grads)
            for name, shape in layer.param_shapes().items():
                n = math.prod(shape)
                params[name] = self.flat_params[offset:offset + n].view(shape)
                grads[name] = self.flat_grads[offset:offset + n].view(shape)
                offset += n
                self._params[f"{key}.{name}"] = params[name]
                self._grads[f"{key}.{name}"] = grads[name]
                self._state_keys.append(f"{key}.{name}")
            for name, (shape, buffer_dtype) in layer.buffer_shapes().items():
                buffers[name] = torch.zeros(shape, dtype=buffer_dtype or self.dtype, device=self.device)
                self._buffers[f"{key}.{name}"] = buffers[name]
                self._state_keys.append(f"{key}.{name}")
            layer.bind(params, grads, buffers)
            layer.generator = self.generator
            scheme, gain = default_init(graph, i) if params else ("torch_default", 1.0)
            layer.reset_parameters(scheme, gain, init_gen)

    def _tie(self, key: str, source: str, layer: Layer, params: dict[str, Tensor], grads: dict[str, Tensor]) -> None:
        """A linear whose weight is the table of the embedding keyed `source` (planning checked the
        shapes): the same views of the flat storage, one parameter for the optimizer, both names in
        the state_dict (as torch's tied modules)."""
        table = self.layers[self.keys.index(source)]
        params["weight"], grads["weight"] = self._params[f"{source}.weight"], self._grads[f"{source}.weight"]
        self._aliases[f"{key}.weight"] = f"{source}.weight"
        self._state_keys.append(f"{key}.weight")
        table.accumulate = True                  # this linear's backward runs first and writes dW

    @property
    def input_dtype(self) -> torch.dtype:
        """int64 when the input is token ids (it feeds an embedding), else the model's dtype."""
        return torch.int64 if self._takes_ids else self.dtype

    def check_ids(self, x: Tensor) -> None:
        """ValueError when an id the input holds is not a row of an embedding that reads it."""
        for i, layer in enumerate(self.layers):
            if layer.kind == "embedding" and INPUT_INDEX in self._inputs[i] and x.numel():
                lo, hi, v = int(x.min()), int(x.max()), layer.spec.num_embeddings
                if lo < 0 or hi >= v:
                    raise ValueError(f"the input holds token id {lo if lo < 0 else hi}, not a row of "
                                     f"{self.plan.label(i)}; valid ids: 0..{v - 1}")

    @classmethod
    def from_spec(cls, spec: ModelSpec | Mapping[str, Any], input_shape: Shape, *, seed: int = 0,
                  dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                  compile: bool = False) -> "Model":
        """compile: run the layers' formulas that fuse best (the norms') through torch.compile
        (engine.layers.compiled): faster steps after a cold start of seconds per formula and shape."""
        return cls(plan(spec, input_shape), seed=seed, dtype=dtype, device=device, compile=compile)

    # -- named tensors ------------------------------------------------------------------
    def parameters(self) -> dict[str, Tensor]:
        """Trainable tensors by state_dict name (views into `flat_params`)."""
        return dict(self._params)

    def grads(self) -> dict[str, Tensor]:
        """Gradients of the last backward, same names as `parameters()`."""
        return dict(self._grads)

    def buffers(self) -> dict[str, Tensor]:
        return dict(self._buffers)

    def layer_items(self) -> Iterator[tuple[str, Layer]]:
        return zip(self.keys, self.layers)

    @property
    def n_parameters(self) -> int:
        return self.flat_params.numel()

    def state_dict(self) -> dict[str, Tensor]:
        """Parameters and buffers, named and laid out as torch.nn's state_dict (copies)."""
        both = self._named_state()
        return {k: both[k].detach().clone() for k in self._state_keys}

    def _named_state(self) -> dict[str, Tensor]:
        """Every state_dict name -> its tensor (a tied weight's name -> its table)."""
        both = {**self._params, **self._buffers}
        return {**both, **{alias: both[source] for alias, source in self._aliases.items()}}

    def load_state_dict(self, state: Mapping[str, Tensor], strict: bool = True) -> None:
        both = self._named_state()
        missing = [k for k in self._state_keys if k not in state]
        unexpected = [k for k in state if k not in both]
        if strict and (missing or unexpected):
            raise KeyError(f"state_dict mismatch: missing {missing}, unexpected {unexpected}")
        for k, v in state.items():
            if k not in both:
                continue
            if tuple(v.shape) != tuple(both[k].shape):
                raise ValueError(f"state_dict[{k!r}] has shape {format_shape(v.shape, batch=False)}, "
                                 f"the model expects {format_shape(both[k].shape, batch=False)}")
            both[k].copy_(v)

    # -- math ---------------------------------------------------------------------------
    def forward(self, x: Tensor, training: bool = True, *, observe: Observer | None = None,
                for_backward: bool | None = None) -> Tensor:
        """x: (N, *input_shape) -> (N, *output_shape). Call under torch.no_grad().

        training: dropout draws masks and batchnorm uses (and updates) batch statistics.
        for_backward: keep what backward needs (default: `training`); see the module docstring.
        observe: called as observe(key, layer, output) after each layer, e.g. for statistics of the
        outputs (`engine.health.OutputStats`); nothing is called or kept when it is None. No layer
        writes into another's output; an observer that keeps outputs keeps every activation of the
        pass alive, so reduce them during the call. (The backward of an unobserved forward writes
        gradients into outputs nothing reads any more: `Layer.reuse_output`.)
        """
        if x.shape[1:] != self.input_shape and not self._shorter_sequence(x):
            raise ValueError(f"input has shape {format_shape(x.shape, batch=False)}, the model expects "
                             f"{format_shape(self.input_shape)}")
        if not (training if for_backward is None else for_backward):
            return self._forward_keeping_nothing(x, training, observe)
        self._pending, self._answered = None, False   # a pass that fails midway leaves nothing to answer
        y = self._run(x, training, observe)
        self._pending, self._observed = y.shape, observe is not None
        return y

    def _shorter_sequence(self, x: Tensor) -> bool:
        """Token ids (N, T') with 1 <= T' <= T: a prompt being generated from is shorter than the context."""
        return self._takes_ids and x.dim() == 2 and len(self.input_shape) == 1 and 1 <= x.shape[1] <= self.input_shape[0]

    def _forward_keeping_nothing(self, x: Tensor, training: bool, observe: Observer | None) -> Tensor:
        """A forward whose layer caches are dropped: each layer gets back the one it held before."""
        caches = [layer.cache for layer in self.layers]
        try:
            return self._run(x, training, observe)
        finally:
            for layer, cache in zip(self.layers, caches):
                layer.cache = cache

    def _run(self, x: Tensor, training: bool, observe: Observer | None) -> Tensor:
        if self._sequential and observe is None:
            for layer in self.layers:
                x = layer.forward(x, training)
            return x
        outs: dict[int, Tensor] = {INPUT_INDEX: x}
        for i, (key, layer) in enumerate(zip(self.keys, self.layers)):
            ins = self._inputs[i]
            outs[i] = (layer.forward([outs[j] for j in ins], training) if layer.merge
                       else layer.forward(outs[ins[0]], training))
            if observe is not None:
                observe(key, layer, outs[i])
            for j in self._last_read_by[i]:   # no later layer reads them: only caches hold them now
                del outs[j]
        return outs[len(self.layers) - 1]

    def _wants_grad(self, j: int) -> bool:
        """In training (no input gradient): is the gradient of layer j's output (or the input, -1) used?"""
        return j != INPUT_INDEX and self._leads_to_params[j]

    def _answer(self, dout: Tensor) -> None:
        """Consume the pending training forward for this backward, or raise BackwardError."""
        pending, self._pending = self._pending, None
        if pending is not None and dout.shape == pending:
            self._answered = True
            return
        label = self.plan.label(len(self.layers) - 1)
        if pending is not None:
            self._pending = pending
            raise BackwardError(f"{label}: dout has shape {format_shape(dout.shape, batch=False)} but the "
                                f"training forward it answers output {format_shape(pending, batch=False)}")
        if self._answered:
            raise BackwardError(f"{label}: backward() called twice for one forward; the last training "
                                "forward was already answered by a backward (run forward(x, training=True) again)")
        raise BackwardError(f"{label}: backward() without a training forward to answer; run "
                            "forward(x, training=True) first (a forward with training=False keeps nothing "
                            "for backward unless for_backward=True)")

    def backward(self, dout: Tensor, need_input_grad: bool = True,
                 after_layer: Callable[[int], None] | None = None) -> Tensor | None:
        """dout: dL/d(output) of the last training forward -> dL/d(input); fills `grads()`.

        need_input_grad=False (training): returns None and skips every gradient that only
        leads to the input: the input-gradient matmul of the first linear / conv, and the
        backward of any parameter-free layers before it.
        after_layer(i): called once layer i's backward is done (i falls: every layer from i on is
        done, so its parameters' gradients are final); data parallelism starts its all-reduces there.
        """
        self._answer(dout)
        for layer in self._input_edge:
            layer.need_dx = need_input_grad
        self._allow_reuse(not self._observed)
        if self._sequential and after_layer is None:
            for layer in self._reversed[need_input_grad]:
                dout = layer.backward(dout)
            return dout if need_input_grad else None
        if self._sequential:
            last = len(self.layers) - 1
            for k, layer in enumerate(self._reversed[need_input_grad]):
                dout = layer.backward(dout)
                after_layer(last - k)
            return dout if need_input_grad else None
        douts: dict[int, Tensor] = {len(self.layers) - 1: dout}   # dL/d(output of layer i)
        for i in range(len(self.layers) - 1, -1, -1):
            if not need_input_grad and not self._leads_to_params[i]:
                continue
            dy = douts.pop(i)
            layer, ins = self.layers[i], self._inputs[i]
            dxs = layer.backward(dy) if layer.merge else [layer.backward(dy)]
            if after_layer is not None:
                after_layer(i)
            for j, dx in zip(ins, dxs):
                if dx is not None and (need_input_grad or self._wants_grad(j)):  # None: integer ids
                    douts[j] = dx if j not in douts else douts[j] + dx  # branches add up
        return douts.get(INPUT_INDEX) if need_input_grad else None    # None: the input is ids only

    def _allow_reuse(self, allowed: bool) -> None:
        """Set every layer's reuse_output to _reusable (allowed) or False; only when it changes."""
        if allowed != self._reuse_allowed:
            for layer, reusable in zip(self.layers, self._reusable):
                layer.reuse_output = reusable and allowed
            self._reuse_allowed = allowed

    @torch.no_grad()
    def predict(self, x: Tensor, batch_size: int = 4096) -> Tensor:
        """Eval-mode forward in batches (keeps nothing: a pending training backward is undisturbed)."""
        x = x.to(self.device, self.input_dtype)
        return torch.cat([self.forward(x[i:i + batch_size], training=False)
                          for i in range(0, x.shape[0], batch_size)]) if x.shape[0] else \
            torch.empty((0, *self.output_shape), dtype=self.dtype, device=self.device)
