"""Retry policy: pure, documented, per job type overridable (Oban ``backoff.ex``, procrastinate
``retry.py``). The queue is the single owner of retries; the LLM client only retries briefly
inside one attempt.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Capped exponential backoff with proportional jitter.

    For the n-th failed attempt (n = retry_count after the failure, 1-based)::

        delay(n) = min(cap, base * 2 ** (n - 1)) * (1 + jitter * u),   u ~ Uniform(-1, 1)

    With the defaults (base 2 s, cap 1 h, jitter 0.25) the un-jittered delays are
    2, 4, 8, 16, 32 ... seconds, never more than 3600 s, each spread by ±25 % so that jobs
    failing together do not retry together.

    >>> p = RetryPolicy(base_seconds=2, cap_seconds=60, jitter=0.0)
    >>> [p.delay_seconds(n) for n in (1, 2, 3, 6, 7)]
    [2.0, 4.0, 8.0, 60.0, 60.0]
    """

    base_seconds: float = 2.0
    cap_seconds: float = 3600.0
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if self.base_seconds <= 0 or self.cap_seconds < self.base_seconds:
            raise ValueError("need 0 < base_seconds <= cap_seconds")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")

    def delay_seconds(self, failures: int, rng: random.Random | None = None) -> float:
        n = max(1, failures)
        # 2 ** n overflows floats near n=1024; the cap is reached long before.
        raw = self.cap_seconds if n > 60 else min(self.cap_seconds, self.base_seconds * 2 ** (n - 1))
        if self.jitter:
            u = (rng or random).uniform(-1.0, 1.0)
            raw *= 1.0 + self.jitter * u
        return raw

    def next_run(self, now: datetime, failures: int, rng: random.Random | None = None) -> datetime:
        return now + timedelta(seconds=self.delay_seconds(failures, rng))
