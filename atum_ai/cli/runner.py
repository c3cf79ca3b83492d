"""What every command gets: settings, the database URL, and lazily built parts."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from atum_ai.clock import Clock, SystemClock
from atum_ai.config import Settings
from atum_ai.handlers.registry import Registry
from atum_ai.queue.store import JobStore


@dataclass
class CommandEnv:
    settings: Settings
    url: str = ""
    embedded: bool = False
    clock: Clock = field(default_factory=SystemClock)
    plugin_specs: list[str] = field(default_factory=list)
    _registry: Registry | None = None

    def registry(self) -> Registry:
        if self._registry is None:
            from atum_ai.runtime import load_registry

            self._registry = load_registry(self.plugin_specs)
        return self._registry

    def store(self, registry: Registry | None = None) -> JobStore:
        from atum_ai.runtime import make_store

        return make_store(self.settings, self.clock, registry)


Command = Callable[[CommandEnv, argparse.Namespace], Awaitable[int]]
