"""The claim's window of organizations rotates: the next one starts just after the last
organization the previous claim served, counted in the claim's wrapping order."""

import uuid
from types import SimpleNamespace

from atum_ai.queue.store import _next_window_start


def org(n: int) -> uuid.UUID:
    return uuid.UUID(int=n)


def jobs(*orgs: int) -> list:
    return [SimpleNamespace(organization_id=org(n)) for n in orgs]


def test_the_next_window_starts_after_the_last_organization_served():
    assert _next_window_start(org(10), jobs(12, 40, 11)) == org(41)


def test_a_window_that_wrapped_continues_after_the_wrapped_part():
    # From 100 the scan went 100..max and wrapped to 0..: 7 is the last one it served,
    # though 250 is the larger id.
    assert _next_window_start(org(100), jobs(250, 7, 3)) == org(8)


def test_the_largest_id_wraps_to_the_smallest():
    top = (1 << 128) - 1
    assert _next_window_start(org(top - 5), jobs(top)) == org(0)
