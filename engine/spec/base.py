"""What every spec shares: frozen, no unknown fields; a bare type name as shorthand."""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import AllowInfNan, BaseModel, ConfigDict, Strict

# a number in a spec: a JSON number, never a string or a boolean ("lr": "0.01" is an error, not
# coerced), never NaN or infinity; an integer is accepted where a float is expected ("lr": 1)
Real = Annotated[float, Strict(), AllowInfNan(False)]


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def type_from_str(v: Any) -> Any:
    """"mse" -> {"type": "mse"}: a bare name stands for a spec with every default."""
    return {"type": v} if isinstance(v, str) else v
