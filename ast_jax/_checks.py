"""Small argument checks shared by the configs and the inference API."""

from __future__ import annotations

import numbers
from typing import Any


def is_positive_int(value: Any) -> bool:
    """An integer (Python or numpy, not a bool) of at least 1."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1
