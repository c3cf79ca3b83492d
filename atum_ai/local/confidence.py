"""Confidence bands shared by the local models (and usable by LLM-backed handlers).

A confidence is a probability-like number in [0, 1]. Agents read it as a band:

    >>> confidence_band(0.93)
    'High'
    >>> confidence_band(0.8)
    'High'
    >>> confidence_band(0.5)
    'Medium'
    >>> confidence_band(0.49)
    'Low'
    >>> confidence_band(float("nan"))
    'Low'
"""

from __future__ import annotations

import math
from typing import Final, Literal

ConfidenceBand = Literal["High", "Medium", "Low"]

HIGH_THRESHOLD: Final = 0.8
MEDIUM_THRESHOLD: Final = 0.5


def clamp_confidence(value: float) -> float:
    """Clamp to [0, 1]; NaN and infinities (a broken model, never a real belief) become 0."""
    if not math.isfinite(value):
        return 0.0
    return min(1.0, max(0.0, float(value)))


def confidence_band(confidence: float) -> ConfidenceBand:
    """High at >= 0.8, Medium at >= 0.5, Low below (and for anything non-finite)."""
    c = clamp_confidence(confidence)
    if c >= HIGH_THRESHOLD:
        return "High"
    if c >= MEDIUM_THRESHOLD:
        return "Medium"
    return "Low"
