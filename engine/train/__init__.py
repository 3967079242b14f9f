"""The training loop: `fit` trains a Model with a hand-written loss and optimizer.

The Celery worker stays thin: it builds the model, loss and optimizer, calls `fit` with
a Callbacks subclass (progress, cancellation, checkpoints) and stores what comes back.

    step = TrainStep(model, loss, optimizer, grad_clip_norm)   # the per-step math, reused by
    value = step(xb, yb)                                       # the benchmark as is

Determinism: the validation split comes from torch.Generator seeded with config.seed;
batches from a separate CPU generator seeded from config.seed; dropout masks from
model.generator. A Checkpoint holds both generators' states, the optimizer state and the
global step, so a run stopped after epoch k and resumed from its checkpoint ends
bit-identical to the run that never stopped (on the same device).

Modules: step (TrainStep), fit (the epochs), metrics (evaluate), callbacks (what fit
reports and returns), errors (why a run stops), distributed (DataParallel: one rank of a
data-parallel fit on torch.distributed, `fit(..., parallel=DataParallel())`).
"""
from ..data import check_compatible
from .callbacks import Callbacks, FitResult, Progress
from .distributed import DataParallel
from .errors import DiagnosisStop, NonFiniteError, TrainingError, find_nonfinite_layer
from .fit import fit
from .metrics import evaluate
from .step import TrainStep

__all__ = ["fit", "TrainStep", "DataParallel", "Callbacks", "Progress", "FitResult", "TrainingError", "NonFiniteError",
           "DiagnosisStop",
           "check_compatible", "evaluate", "find_nonfinite_layer"]
