"""What the curvature at a point is, with its uncertainty: minimum, saddle, maximum or inconclusive.

An eigenvalue's sign counts only when its bound excludes zero and it is beyond `flat` (tolerance x
the largest |eigenvalue|: curvature that small counts as none). The sign of an end whose run did not
converge counts only when the spectral density agrees (some of its mass on that side of zero):
an unconverged run never decides the verdict alone.

    largest > 0, smallest < 0      saddle
    largest > 0, smallest >= 0     minimum (flat along some direction when smallest is within flat)
    largest <= 0, smallest < 0     maximum
    anything else                  inconclusive, with the reason
"""
from __future__ import annotations

from .curvature import Eigen

POSITIVE, NEGATIVE, FLAT, UNKNOWN = "positive", "negative", "flat", "unknown"


def sign(end: Eigen, flat: float) -> str:
    """Positive / negative when the interval value ± bound excludes zero and |value| > flat; flat when
    the whole interval is within flat; else unknown (the bound is too wide to tell)."""
    if end.value - end.bound > 0 and end.value > flat:
        return POSITIVE
    if end.value + end.bound < 0 and end.value < -flat:
        return NEGATIVE
    return FLAT if abs(end.value) + end.bound <= flat else UNKNOWN


def counted(end: Eigen, flat: float, density: dict | None) -> str:
    """The end's sign as the verdict may use it: an unconverged end's only with the density's support."""
    s = sign(end, flat)
    if end.converged or s in (FLAT, UNKNOWN):
        return s if end.converged else UNKNOWN
    supported = density is not None and density[f"{s}_mass"] > 0
    return s if supported else UNKNOWN


def describe(end: Eigen, which: str) -> str:
    text = f"the {which} eigenvalue is {end.value:.2g} ± {end.bound:.1g}"
    return text if end.converged else text + f" (its run did not converge in {end.products} products)"


def verdict(largest: Eigen, smallest: Eigen, tolerance: float, density: dict | None = None) -> tuple[str, str]:
    """(verdict, the reason in words)."""
    flat = tolerance * max(abs(largest.value), abs(smallest.value))
    top, bottom = counted(largest, flat, density), counted(smallest, flat, density)
    big, small = describe(largest, "largest"), describe(smallest, "smallest")
    if top == POSITIVE and bottom == NEGATIVE:
        return "saddle", f"{small} and {big}: the loss curves down along some direction and up along another"
    if top == POSITIVE and bottom == POSITIVE:
        return "minimum", f"{small}: the loss curves up in every direction"
    if top == POSITIVE and bottom == FLAT:
        return "minimum", (f"{small}, within {flat:.1g} of zero (tolerance x the largest): flat along some "
                           "direction, curving down along none")
    if bottom == NEGATIVE and top in (NEGATIVE, FLAT):
        return "maximum", f"{big}: the loss curves down in every direction, or stays flat"
    if top == FLAT and bottom == FLAT:
        return "inconclusive", f"{big} and {small}: no curvature beyond the tolerance in any direction"
    return "inconclusive", _why_not(largest, smallest, flat, big, small)


def _why_not(largest: Eigen, smallest: Eigen, flat: float, big: str, small: str) -> str:
    """The reason when no end decides: which run did not converge, or which bound straddles zero."""
    parts = []
    for end, text in ((smallest, small), (largest, big)):
        s = sign(end, flat)
        if not end.converged and s == NEGATIVE:
            parts.append(f"{text}: it points to a direction curving down, which an unconverged run cannot "
                         "establish alone")
        elif not end.converged and s != POSITIVE:
            parts.append(f"{text}: flat along some direction as far as it went; not a saddle by this measure")
        elif s == UNKNOWN:
            parts.append(f"{text}: its bound does not exclude zero")
        elif not end.converged:
            parts.append(f"{text}: not established")
    parts = parts or [f"{small} and {big}"]
    return "; ".join(parts) + ". Ask for more iterations (Hessian-vector products per end) to settle it"
