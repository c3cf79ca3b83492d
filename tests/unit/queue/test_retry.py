import random
from datetime import UTC, datetime, timedelta

import pytest

from atum_ai.queue.retry import RetryPolicy


def test_backoff_grows_exponentially_until_the_cap():
    p = RetryPolicy(base_seconds=2, cap_seconds=60, jitter=0)
    assert [p.delay_seconds(n) for n in range(1, 8)] == [2, 4, 8, 16, 32, 60, 60]


def test_backoff_is_jittered_within_bounds_and_not_constant():
    p = RetryPolicy(base_seconds=10, cap_seconds=1000, jitter=0.25)
    rng = random.Random(1)
    delays = [p.delay_seconds(3, rng) for _ in range(200)]
    assert all(30 <= d <= 50 for d in delays)
    assert len({round(d, 6) for d in delays}) > 150
    assert 38 < sum(delays) / len(delays) < 42


def test_huge_attempt_numbers_do_not_overflow():
    p = RetryPolicy(base_seconds=1, cap_seconds=3600, jitter=0)
    assert p.delay_seconds(10_000) == 3600


def test_next_run_adds_the_delay():
    p = RetryPolicy(base_seconds=5, cap_seconds=60, jitter=0)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert p.next_run(now, 2) == now + timedelta(seconds=10)


@pytest.mark.parametrize("kw", [{"base_seconds": 0}, {"base_seconds": 10, "cap_seconds": 5}, {"jitter": 1.0}])
def test_invalid_policies_are_refused(kw):
    with pytest.raises(ValueError):
        RetryPolicy(**kw)
