"""The atum_ai error tree.

One small hierarchy, drawn here so that callers can see at a glance what to catch
(the httpx ``_exceptions.py`` habit)::

    AtumError
    ├── ConfigError                 operator or developer mistake; never retried
    ├── ValidationError             bad input at the edge (enqueue, ingest, CLI); names the field
    │   └── PayloadValidationError  a job payload that fails its checks
    ├── StoreError                  the database boundary (psycopg errors are translated here)
    │   ├── LostClaimError          a fenced write found the job no longer ours (lease lost)
    │   ├── DuplicateJobError       a unique constraint refused a job
    │   └── JobNotFoundError
    └── JobError                    raised by handlers; decides the job's next state
        ├── RetryableError          timeout, 429, 5xx, connection loss -> FAILED + backoff
        │   └── LLMRetryableError   the LLM endpoint stayed unavailable after in-call retries
        └── PermanentError          -> DEAD at once, no retry storm
            ├── LLMOutputError      model output still invalid after the re-ask
            └── UnknownJobTypeError

Translate at the boundary: psycopg in ``queue/store.py``, the openai SDK in ``ai/client.py``.
Messages never contain secrets: :func:`atum_ai.redact.redact_secrets` runs over every
message that is logged or stored.
"""

from __future__ import annotations

from typing import Any


class AtumError(Exception):
    """Root of every error atum_ai raises on purpose."""


class ConfigError(AtumError):
    """A configuration or wiring mistake (duplicate job type, pool too small, bad setting)."""


class ValidationError(AtumError):
    """Input refused at the edge. ``field`` names what is wrong (dotted path) when known."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)


class PayloadValidationError(ValidationError):
    """A job payload failed validation (model, size, NUL characters, naive datetimes)."""


class StoreError(AtumError):
    """A database operation failed in a way the caller should know about."""


class LostClaimError(StoreError):
    """A fenced write matched no row: the job is no longer RUNNING under this worker."""

    def __init__(self, job_ids: list[Any] | Any, message: str = "") -> None:
        self.job_ids = job_ids if isinstance(job_ids, list) else [job_ids]
        super().__init__(message or f"lost claim on job(s) {', '.join(map(str, self.job_ids))}")


class DuplicateJobError(StoreError):
    """A unique constraint (dedupe key) refused the job."""


class JobNotFoundError(StoreError):
    """No job with that id (in that organization)."""


class JobError(AtumError):
    """Raised by handlers; its subclass decides whether the job retries."""


class RetryableError(JobError):
    """A transient failure: the queue retries with backoff until max_retries."""


class PermanentError(JobError):
    """A failure that no retry can fix: the job goes DEAD at once."""


class UnknownJobTypeError(PermanentError):
    """No handler is registered for the job's type."""


class LLMRetryableError(RetryableError):
    """The LLM endpoint failed transiently (429, 5xx, timeout, connection) after in-call retries."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        self.status_code = status_code
        super().__init__(message)


class LLMOutputError(PermanentError):
    """The model's output did not validate, even after re-asking with the validation error."""

    def __init__(self, message: str, *, attempts: int = 0, usage: dict[str, int] | None = None) -> None:
        self.attempts = attempts
        self.usage = usage or {}
        super().__init__(message)
