"""What the curvature at a point is, with its uncertainty: minimum, saddle, maximum or inconclusive.

An eigenvalue's sign counts only when its bound excludes zero and it is beyond `flat` (tolerance x
the largest |eigenvalue|: curvature that small counts as none). The sign of an end whose run did not
converge counts only when the spectral density agrees (some of its mass on that side of zero):
an unconverged run never decides the verdict alone, and never shows a minimum or a maximum.

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


def counted(end: Eigen, which: str, flat: float, density: dict | None) -> str:
    """The end's sign as the verdict may use it. An unconverged run may still have found curvature
    beyond flat on its own side (a Rayleigh quotient lies within the spectrum), which counts when the
    density's quadrature nodes (Ritz values, also within the spectrum) show mass on that side too;
    it can never show that nothing lies beyond it."""
    s = sign(end, flat)
    if end.converged:
        return s
    side = NEGATIVE if which == "smallest" else POSITIVE
    if s == side and density is not None and density[f"{side}_mass"] > 0:
        return s
    return UNKNOWN


def describe(end: Eigen, which: str) -> str:
    text = f"the {which} eigenvalue is {end.value:.2g} ± {end.bound:.1g}"
    return text if end.converged else text + f" (its run did not converge in {end.products} products)"


def verdict(largest: Eigen, smallest: Eigen, tolerance: float, density: dict | None = None) -> tuple[str, str]:
    """(verdict, the reason in words)."""
    flat = tolerance * max(abs(largest.value), abs(smallest.value))
    top, bottom = counted(largest, "largest", flat, density), counted(smallest, "smallest", flat, density)
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
    for end, text, down in ((smallest, small, True), (largest, big, False)):
        s = sign(end, flat)
        if end.converged:
            if s == UNKNOWN:
                parts.append(f"{text}: its bound does not exclude zero")
        elif s == (NEGATIVE if down else POSITIVE):
            parts.append(f"{text}: it points to a direction curving {'down' if down else 'up'}, which an "
                         "unconverged run cannot establish alone")
        elif down:
            parts.append(f"{text}: flat along some direction as far as it went; not a saddle by this measure, "
                         "nor a minimum, since the run may not have reached the bottom of the spectrum")
        else:
            parts.append(f"{text}: the top of the spectrum is not established")
    parts = parts or [f"{small} and {big}"]
    return "; ".join(parts) + ". Ask for more iterations (Hessian-vector products per end) to settle it"
