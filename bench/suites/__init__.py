"""Benchmark suites. Each returns a list of ``Row``s; bench/__main__.py prints and saves them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.common import Stat


@dataclass
class Row:
    suite: str
    metric: str  # e.g. "jobs/s, concurrency 16"
    system: str
    stat: Stat
    better: str = "higher"  # or "lower"
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"suite": self.suite, "metric": self.metric, "system": self.system,
                **self.stat.to_json(), "better": self.better, "note": self.note, **self.extra}
