"""Token usage and cost accounting for LLM calls.

Prices come from configuration (``ATUM_LLM_PRICES``: USD per 1M input and output tokens by
model name), never from a table baked into the code: prices change, and self-hosted models
cost nothing per token.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

TOKENS_PER_PRICE_UNIT = 1_000_000


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens spent; additive, so a call with a re-ask reports the sum of both requests."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.total_tokens + other.total_tokens,
        )

    @classmethod
    def from_response(cls, usage: Any) -> Usage:
        """From an SDK ``CompletionUsage`` (or None: some servers omit usage)."""
        if usage is None:
            return cls()
        prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion = int(getattr(usage, "completion_tokens", 0) or 0)
        total = int(getattr(usage, "total_tokens", 0) or 0) or prompt + completion
        return cls(prompt, completion, total)

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


def cost_usd(usage: Usage, prices: Mapping[str, tuple[float, float]], *models: str | None) -> float:
    """Cost of ``usage`` at the first of ``models`` found in ``prices``; 0.0 if none is priced.

    Several names are tried because servers often answer with a dated variant of the model
    that was asked for (asked ``gpt-4o-mini``, answered ``gpt-4o-mini-2024-07-18``).

    >>> cost_usd(Usage(1000, 500, 1500), {"m": (0.15, 0.60)}, "m")
    0.00045
    """
    for model in models:
        if model and model in prices:
            price_in, price_out = prices[model]
            cost = usage.prompt_tokens * price_in + usage.completion_tokens * price_out
            return round(cost / TOKENS_PER_PRICE_UNIT, 8)
    return 0.0
