"""Request and response schemas of the analyses: the gradient check and the loss landscape."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from core.lifecycle import JobStatus
from core.tables import ID_PATTERN, as_utc
from engine.spec import LossSpec, ModelSpec
from engine.spec.base import Real

from core.jobspec import openapi_friendly

from .schemas import JobError

UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]
Dim = Annotated[int, Field(ge=1, le=1_000_000)]
Status = Literal["passed", "failed", "kink"]


# ----------------------------------------------------------------------------- gradient check
def _gradcheck_schema(schema: dict[str, Any]) -> None:
    openapi_friendly(schema)
    schema["examples"] = [{"model": {"layers": [{"type": "linear", "out_features": 16}, {"type": "tanh"},
                                                {"type": "linear", "out_features": 3}]},
                           "loss": "cross_entropy", "input_shape": [4], "batch_size": 4, "seed": 0}]


class GradcheckRequest(BaseModel):
    """A network and a loss, checked on a small batch: random inputs of `input_shape`, or rows of a dataset."""
    model_config = ConfigDict(extra="forbid", json_schema_extra=_gradcheck_schema)

    model: ModelSpec
    loss: LossSpec
    input_shape: list[Dim] | None = Field(None, min_length=1, max_length=3, description=(
        "Shape of one sample ([F] or [C, H, W]): the batch is seeded N(0, 1) inputs, with random targets "
        "for the loss. Give this or dataset_id."))
    dataset_id: str | None = Field(None, pattern=ID_PATTERN, description="Check on seeded rows of one of your "
                                   "datasets instead of random inputs.")
    batch_size: int = Field(4, ge=1, le=1_000_000, description="Rows of the batch (small: the check runs two "
                            "forward passes per coordinate; at most gradcheck_max_batch_size).")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="Initial weights, inputs and the coordinates checked.")
    tolerance: Real = Field(1e-6, gt=0, le=1, description="Largest relative error that passes.")
    coordinates: int = Field(32, ge=1, le=1_000_000, description="Coordinates checked per tensor: all of a "
                             "smaller tensor, a seeded random subset of a larger one.")

    @model_validator(mode="after")
    def _one_source(self) -> "GradcheckRequest":
        if (self.input_shape is None) == (self.dataset_id is None):
            raise ValueError("give exactly one of input_shape (random inputs) and dataset_id (rows of a dataset)")
        return self


class Coordinate(BaseModel):
    tensor: str | None = Field(None, description="The parameter tensor (state_dict name), for a layer's worst.")
    index: list[int]
    analytic: float | None = Field(description="The engine's backward.")
    numeric: float | None = Field(description="The centred finite difference.")
    relative_error: float | None


class TensorCheck(BaseModel):
    name: str = Field(description="A state_dict name (`0.weight`), or `input`.")
    shape: list[int]
    checked: int
    of: int
    status: Status = Field(description="kink: fails only at kinks (relu at 0, max pool ties), which break "
                                       "the finite difference, not the backward.")
    max_relative_error: float | None
    kinks: int
    worst: Coordinate | None


class LayerCheck(BaseModel):
    key: str
    type: str
    status: Status
    max_relative_error: float | None
    kinks: int
    worst: Coordinate | None
    tensors: list[TensorCheck]


class GradcheckReport(BaseModel):
    passed: bool = Field(description="No layer (and not the input) failed.")
    tolerance: float
    eps: float = Field(description="The finite-difference step.")
    dtype: Literal["float64"]
    loss: float | None
    batch_size: int
    coordinates_checked: int
    time_s: float
    layers: list[LayerCheck] = Field(description="Layers with parameters, in order.")
    input: TensorCheck | None = Field(description="dL/d(input).")


# ----------------------------------------------------------------------------- landscape
class LandscapeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"points": 25, "grid": 21}]})

    points: int = Field(25, ge=25, le=100_000, description="Points on the line from the initial to the final "
                        "weights, alpha in [-0.5, 1.5] (at most landscape_max_points).")
    grid: int = Field(21, ge=21, le=100_000, description="Points per side of the surface around the final "
                      "weights (at most landscape_max_grid).")
    span: Real = Field(1.0, gt=0, le=100, description="The surface covers [-span, span] along each "
                       "filter-normalised direction.")
    samples: int = Field(512, ge=1, le=10_000_000, description="Training rows the loss is evaluated on (a "
                         "seeded subset; at most landscape_max_samples).")
    iterations: int = Field(200, ge=1, le=1_000_000, description="Hessian-vector products for each end of the "
                            "spectrum (Lanczos, scipy's eigsh; about; at most hessian_max_iterations).")
    trace_samples: int = Field(20, ge=1, le=1_000_000, description="Hutchinson vectors for the trace (at most "
                               "hessian_max_trace_samples).")
    tolerance: Real = Field(1e-3, ge=0, lt=1, description="Curvature within tolerance x the largest |eigenvalue| "
                            "counts as flat: it gives the verdict no sign.")
    density_vectors: int = Field(3, ge=0, le=16, description="Rademacher vectors of the spectral density "
                                 "(stochastic Lanczos quadrature); 0 leaves it out.")
    density_steps: int = Field(40, ge=1, le=1_000_000, description="Lanczos steps per density vector (at most "
                               "hessian_max_iterations).")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="The subset, the directions, the Lanczos starts.")


Losses = list[float | None]     # null: the loss overflowed there


class Line(BaseModel):
    alphas: list[float]
    losses: Losses


class Surface(BaseModel):
    xs: list[float]
    ys: list[float]
    losses: list[Losses] = Field(description="losses[j][i] at (xs[i], ys[j]).")
    loss_at_center: float | None


class Eigenvalue(BaseModel):
    value: float | None = Field(description="The Rayleigh quotient v^T H v of the unit vector found.")
    bound: float | None = Field(description="||H v - value v||: an eigenvalue of H lies within value ± bound.")
    converged: bool = Field(description="bound <= 1e-6 x the largest |eigenvalue|.")
    products: int = Field(description="Hessian-vector products this end used.")


class SpectralDensity(BaseModel):
    eigenvalues: list[float] = Field(description="The series' x: eigenvalues, evenly spaced.")
    density: list[float | None] = Field(description="The density at each, integrating to 1.")
    sigma: float = Field(description="The Gaussian smoothing's standard deviation.")
    flat: float = Field(description="tolerance x the largest |eigenvalue|: nearer zero counts as flat.")
    negative_mass: float = Field(description="The fraction of eigenvalues below -flat (from the quadrature).")
    positive_mass: float = Field(description="The fraction of eigenvalues above flat.")
    mean: float = Field(description="The mean eigenvalue, tr(H) / parameters.")
    vectors: int
    steps: int
    products: int


class Hessian(BaseModel):
    verdict: Literal["minimum", "saddle", "maximum", "inconclusive"]
    reason: str | None = Field(None, description="Why, in words, with each eigenvalue's bound.")
    method: Literal["lanczos", "dense"] | None = Field(None, description="lanczos: scipy's eigsh on "
                                                       "Hessian-vector products; dense: H read whole (few parameters).")
    max_eigenvalue: float | None
    min_eigenvalue: float | None
    largest: Eigenvalue | None = None
    smallest: Eigenvalue | None = None
    tolerance: float
    flat: float | None = None
    converged: bool
    gradient_norm: float | None
    parameters: int
    trace: float | None
    trace_method: Literal["exact", "hutchinson"]
    trace_samples: int
    trace_stderr: float | None
    density: SpectralDensity | None = None
    hessian_vector_products: int


class LandscapeResult(BaseModel):
    samples: int
    parameters: int
    initial_weights: Literal["verified", "unverified", "mismatch"] = Field(description=(
        "The initial weights, rebuilt from the job's seed, checked against the fingerprint taken when it "
        "started (its init report); without one they are unverified; a mismatch leaves no line."))
    line: Line | None
    surface: Surface
    hessian: Hessian


class LandscapePublic(BaseModel):
    job_id: str
    status: JobStatus
    options: dict[str, Any]
    fraction: float = Field(ge=0, le=1)
    attempts: int
    cancel_requested: bool
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    error: JobError | None
    result: LandscapeResult | None

    @classmethod
    def from_row(cls, row: Any) -> "LandscapePublic":
        return cls(job_id=row.job_id, status=row.status, options=row.options, fraction=min(max(row.fraction, 0.0), 1.0),
                   attempts=row.attempts, cancel_requested=bool(row.cancel_requested), created_at=row.created_at,
                   started_at=row.started_at, finished_at=row.finished_at,
                   error={"code": row.error_code, "message": row.error_message or ""} if row.error_code else None,
                   result=row.result)
