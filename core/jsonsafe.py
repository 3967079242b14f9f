"""JSON that every database and browser takes: NaN and infinities become null."""
from __future__ import annotations

import math
from typing import Any


def json_safe(value: Any) -> Any:
    """NaN / inf become null: PostgreSQL's JSON refuses them and so do browsers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # a 0-d tensor slipped through
        return json_safe(value.item())
    return value
