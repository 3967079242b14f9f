"""The optimizer base: state layout, the flat-or-per-parameter step, state_dict; flat_base and
gradient clipping, which work on the same flat memory."""
from __future__ import annotations

from typing import Any, ClassVar, Mapping

import torch
from torch import Tensor

from ..shapes import format_shape


def flat_base(tensors: list[Tensor]) -> Tensor | None:
    """A 1-D view of the memory that `tensors` tile exactly, contiguous and in order; None if they don't.

    True for `Model.parameters()` / `Model.grads()` (views of flat_params / flat_grads): the view
    then covers exactly flat_params' (flat_grads') elements, so updating it updates every tensor.
    """
    if not tensors:
        return None
    first = tensors[0]
    storage = first.untyped_storage().data_ptr()
    start = offset = first.storage_offset()
    for t in tensors:
        if t.untyped_storage().data_ptr() != storage or t.dtype != first.dtype or not t.is_contiguous() \
                or t.storage_offset() != offset:
            return None
        offset += t.numel()
    return first.as_strided((offset - start,), (1,), start)


class Optimizer:
    """Base: state layout, step dispatch (flat or per parameter), state_dict."""
    name: ClassVar[str]

    def __init__(self, spec: Any, params: Mapping[str, Tensor]):
        self.spec = spec
        self.lr: float = float(spec.lr)
        self.steps: int = 0  # optimizer steps taken (torch's state["step"])
        if not params:
            raise ValueError("optimizer got no parameters; expected a non-empty {name: tensor} dict")
        self.names: list[str] = list(params)
        self.params: list[Tensor] = [params[k] for k in self.names]
        p0 = self.params[0]
        for k, p in zip(self.names, self.params):
            if not isinstance(p, Tensor) or not p.is_floating_point():
                raise ValueError(f"parameter {k!r} must be a floating-point tensor, got "
                                 f"{getattr(p, 'dtype', type(p).__name__)}")
            if p.dtype != p0.dtype or p.device != p0.device:
                raise ValueError(f"parameter {k!r} is {p.dtype} on {p.device} but {self.names[0]!r} is "
                                 f"{p0.dtype} on {p0.device}; all parameters must share dtype and device")
        self.dtype, self.device = p0.dtype, p0.device
        self.numel = sum(p.numel() for p in self.params)
        self._flat_params = flat_base(self.params)  # (numel,) or None
        self._offsets: list[int] = []
        off = 0
        for p in self.params:
            self._offsets.append(off)
            off += p.numel()
        # state buffers, each (numel,), and per-parameter views of them
        self.state: dict[str, Tensor] = {b: self._zeros() for b in self.buffer_names()}
        self._state_views = [{b: self._view(t, i) for b, t in self.state.items()}
                             for i in range(len(self.params))]

    # -- layout helpers -----------------------------------------------------------------
    def _zeros(self) -> Tensor:
        return torch.zeros(self.numel, dtype=self.dtype, device=self.device)

    def _view(self, flat: Tensor, i: int) -> Tensor:
        p = self.params[i]
        return flat[self._offsets[i]:self._offsets[i] + p.numel()].view(p.shape)

    def buffer_names(self) -> list[str]:
        """State buffers this configuration keeps (torch's state key names)."""
        raise NotImplementedError

    # -- the update ---------------------------------------------------------------------
    def _update(self, p: Tensor, g: Tensor, state: dict[str, Tensor], scratch: Tensor | None) -> None:
        """One torch update on p (in place) with gradient g.

        p, g and every state[...] have the same shape: either the whole flat (numel,) buffer or
        one parameter's view. scratch is g itself when the caller has no further use for the
        gradient (`step(..., reuse_grads=True)`): the update may write its temporaries there once
        it has read g for the last time; None: it makes them (`out=None`) and frees them with the
        step, as torch.optim's single-tensor step does. Either way the optimizer keeps no
        parameter-sized tensor between steps but its state.
        """
        raise NotImplementedError

    @property
    def is_flat(self) -> bool:
        """True when `step` updates every parameter at once, on the flat memory they tile."""
        return self._flat_params is not None

    def _flat_grads(self, grads: Mapping[str, Tensor] | Tensor) -> tuple[Tensor | list[Tensor], bool]:
        """(the grads as one flat tensor when possible, else a list in parameter order; True when that
        flat tensor is a copy made here, which the update may overwrite)."""
        if isinstance(grads, Tensor):
            if grads.dim() != 1 or grads.numel() != self.numel or not grads.is_contiguous():
                raise ValueError(f"a flat gradient must be a contiguous 1-D tensor of {self.numel} elements "
                                 f"(the parameter count), got shape {format_shape(grads.shape, batch=False)}")
            return grads, False
        if len(grads) != len(self.names):
            self._check_keys(grads)
        try:
            objs = [grads[k] for k in self.names]
        except KeyError:
            self._check_keys(grads)
            raise
        for k, p, g in zip(self.names, self.params, objs):
            if g.shape != p.shape or g.dtype != p.dtype or g.device != p.device:
                raise ValueError(f"gradient {k!r} is {format_shape(g.shape, batch=False)} {g.dtype} on "
                                 f"{g.device}; the parameter is {format_shape(p.shape, batch=False)} {p.dtype} "
                                 f"on {p.device}")
        flat = flat_base(objs)
        if flat is not None:
            return flat, False
        if self._flat_params is not None:  # gather into one temporary of this step, then update flat
            return torch.cat([g.reshape(-1) for g in objs]), True
        return objs, False

    def _check_keys(self, grads: Mapping[str, Tensor]) -> None:
        missing = [k for k in self.names if k not in grads]
        unexpected = [k for k in grads if k not in set(self.names)]
        if missing or unexpected:
            raise KeyError(f"gradients do not match the parameters: missing {missing}, "
                           f"unexpected {unexpected}")

    def step(self, grads: Mapping[str, Tensor] | Tensor, *, reuse_grads: bool = False) -> None:
        """Update every parameter in place with `grads` ({name: tensor} or one flat tensor).

        Uses `self.lr` as it is now. `grads` is not modified unless reuse_grads: then the caller
        has no further use for them (a training step whose next backward overwrites them) and the
        update writes its temporaries into them instead of allocating parameter-sized tensors.
        """
        g, gathered = self._flat_grads(grads)
        self.steps += 1
        spent = reuse_grads or gathered
        if isinstance(g, Tensor) and self._flat_params is not None:
            self._update(self._flat_params, g, self.state, g if spent else None)
            return
        if isinstance(g, Tensor):  # flat grads, separate params
            g = [self._view(g, i) for i in range(len(self.params))]
        for i, p in enumerate(self.params):
            self._update(p, g[i], self._state_views[i], g[i] if spent else None)

    # -- checkpointing ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Tensor]:
        """Only tensors (safetensors-ready), flat keys: "step", "lr", "<buffer>/<param name>"."""
        out = {"step": torch.tensor(self.steps, dtype=torch.int64),
               "lr": torch.tensor(self.lr, dtype=torch.float64)}
        for i, k in enumerate(self.names):
            for b, v in self._state_views[i].items():
                out[f"{b}/{k}"] = v.detach().clone()
        return out

    def expected_keys(self) -> list[str]:
        return ["step", "lr"] + [f"{b}/{k}" for k in self.names for b in self.state]

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Restore `state_dict()` exactly: the next step is bit-identical to an unbroken run."""
        expected = self.expected_keys()
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in set(expected)]
        if missing or unexpected:
            raise KeyError(f"{self.name} optimizer state does not match: missing {missing}, "
                           f"unexpected {unexpected}")
        for i, k in enumerate(self.names):
            for b, v in self._state_views[i].items():
                src = state[f"{b}/{k}"]
                if tuple(src.shape) != tuple(v.shape):
                    raise ValueError(f"optimizer state {b}/{k} has shape {format_shape(src.shape, batch=False)}, "
                                     f"the parameter is {format_shape(v.shape, batch=False)}")
        for i, k in enumerate(self.names):
            for b, v in self._state_views[i].items():
                v.copy_(state[f"{b}/{k}"])
        steps = int(state["step"])
        if steps < 0:
            raise ValueError(f"optimizer state step is {steps}; it must be >= 0")
        self.steps, self.lr = steps, float(state["lr"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r}, {len(self.names)} tensors, " \
               f"{'flat' if self.is_flat else 'per-tensor'})"


def clip_grad_norm_(grads: Mapping[str, Tensor] | Tensor, max_norm: float) -> Tensor:
    """Scale grads in place so their total 2-norm is at most max_norm; return the norm before.

    torch.nn.utils.clip_grad_norm_'s rule: coef = max_norm / (total + 1e-6), clamped
    to 1, always multiplied (no host sync). Grads that tile one flat buffer (or one
    flat tensor) are handled as that buffer: one norm, one multiply.
    """
    max_norm = float(max_norm)
    ts = [grads] if isinstance(grads, Tensor) else list(grads.values())
    if not ts:
        return torch.tensor(0.0)
    base = flat_base(ts) if len(ts) > 1 else None
    if base is not None:
        ts = [base]
    norms = [torch.linalg.vector_norm(t, 2) for t in ts]
    total = norms[0] if len(norms) == 1 else torch.linalg.vector_norm(torch.stack(norms), 2)
    clip_coef = max_norm / (total + 1e-6)
    clip_coef_clamped = torch.clamp(clip_coef, max=1.0)
    for t in ts:
        t.mul_(clip_coef_clamped)
    return total
