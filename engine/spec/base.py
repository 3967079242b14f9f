"""What every spec shares: frozen, no unknown fields; a bare type name as shorthand."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def type_from_str(v: Any) -> Any:
    """"mse" -> {"type": "mse"}: a bare name stands for a spec with every default."""
    return {"type": v} if isinstance(v, str) else v
