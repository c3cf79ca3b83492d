"""Handler registry: built-ins plus the ``atum_ai.handlers`` entry-point group.

A third party adds a job type with a package (no fork)::

    [project.entry-points."atum_ai.handlers"]
    my_type = "my_package.handlers:MyHandler"

Registering a job type twice is a startup error (River's ``AddWorkerSafely``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from atum_ai.errors import ConfigError, PayloadValidationError
from atum_ai.handlers.base import Handler
from atum_ai.queue.models import JOB_TYPE_RE

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "atum_ai.handlers"

BUILTIN_HANDLERS = (
    "atum_ai.handlers.triage:TriageHandler",
    "atum_ai.handlers.kb_suggest:KbSuggestHandler",
    "atum_ai.handlers.smart_reply:SmartReplyHandler",
    "atum_ai.handlers.sla_predict:SlaPredictHandler",
    "atum_ai.handlers.metrics_snapshot:MetricsSnapshotHandler",
)


def describe_validation_error(exc: PydanticValidationError) -> tuple[str, str]:
    """The first error of a pydantic ValidationError as (dotted field path, message)."""
    from atum_ai.queue.validation import field_path

    err = exc.errors(include_url=False)[0]
    return field_path(err["loc"]), err["msg"]


class Registry:
    """job_type -> handler instance. Also the queue's PayloadValidator."""

    def __init__(self, handlers: Iterable[Handler[Any, Any]] = ()) -> None:
        self._handlers: dict[str, Handler[Any, Any]] = {}
        self._origins: dict[str, str] = {}
        for h in handlers:
            self.register(h)

    def register(self, handler: Handler[Any, Any], origin: str = "") -> None:
        job_type = getattr(handler, "job_type", None)
        if not isinstance(job_type, str) or not JOB_TYPE_RE.match(job_type):
            raise ConfigError(f"handler {handler!r} has an invalid job_type {job_type!r}")
        for attr in ("Payload", "Result"):
            if not hasattr(handler, attr):
                raise ConfigError(f"handler for {job_type} has no {attr} model")
        if job_type in self._handlers:
            raise ConfigError(
                f"job type {job_type} is registered twice "
                f"({self._origins[job_type] or 'built-in'} and {origin or 'built-in'})"
            )
        self._handlers[job_type] = handler
        self._origins[job_type] = origin

    def get(self, job_type: str) -> Handler[Any, Any] | None:
        return self._handlers.get(job_type)

    def __contains__(self, job_type: object) -> bool:
        return job_type in self._handlers

    def __iter__(self) -> Iterator[Handler[Any, Any]]:
        return iter(self._handlers[k] for k in sorted(self._handlers))

    @property
    def job_types(self) -> list[str]:
        return sorted(self._handlers)

    def origin(self, job_type: str) -> str:
        return self._origins.get(job_type, "")

    def validate_payload(self, job_type: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Check a payload against its job type's model; unknown types pass unchanged (the
        worker marks them DEAD), so a producer may enqueue for a plugin it does not load."""
        handler = self._handlers.get(job_type)
        if handler is None:
            return payload
        try:
            model = handler.Payload.model_validate(payload)
        except PydanticValidationError as exc:
            field, msg = describe_validation_error(exc)
            raise PayloadValidationError(msg, field=field) from None
        return model.model_dump(mode="json", exclude_none=False)


def _load(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    obj = import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _instantiate(obj: Any) -> Handler[Any, Any]:
    return obj() if isinstance(obj, type) else obj


def build_registry(*, builtins: bool = True, plugins: bool = True) -> Registry:
    registry = Registry()
    if builtins:
        for spec in BUILTIN_HANDLERS:
            registry.register(_instantiate(_load(spec)), origin="built-in")
    if plugins:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                handler = _instantiate(ep.load())
            except Exception as exc:  # a broken plugin must not take the worker down silently
                raise ConfigError(f"cannot load handler plugin {ep.name} ({ep.value}): {exc}") from exc
            registry.register(handler, origin=f"plugin {ep.dist.name if ep.dist else ''}:{ep.name}")
    return registry
