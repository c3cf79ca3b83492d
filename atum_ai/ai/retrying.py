"""Short in-call retries for LLM requests, and the translation of SDK errors.

The job queue owns retries (capped exponential backoff over minutes). This module only
smooths over blips *within one attempt*: a 429 that says "retry in 2 s", a 502 from a
proxy, a dropped connection. It gives up quickly (3 requests, 30 s budget by default) and
raises :class:`~atum_ai.errors.LLMRetryableError`, so the queue's backoff takes over.
The SDK's own retries are off (``max_retries=0``): two retry layers would silently
multiply each other.

Classification (what the queue then does with the job)::

    408, 429, 5xx, connection error, timeout  -> retried here, then LLMRetryableError (FAILED)
    other 4xx (400, 401, 403, 404, 422 ...)   -> PermanentError (DEAD): no retry can fix them

Every message built here goes through :func:`atum_ai.redact.sanitize_error`, and SDK
exceptions are not chained (``from None``): their text may echo request details.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

import openai
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from atum_ai.clock import Clock, SystemClock
from atum_ai.errors import LLMRetryableError, PermanentError
from atum_ai.redact import sanitize_error

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRYABLE_STATUS = frozenset({408, 429})
MESSAGE_LIMIT = 300  # characters of a server's error text kept in our messages


@dataclass(frozen=True, slots=True)
class RetrySettings:
    """Bounds for in-call retries.

    The wait before retry n (1-based) is the server's ``Retry-After`` / ``retry-after-ms``
    when given, else ``min(max_wait, initial_wait * 2 ** (n - 1))`` scaled by a random factor
    in [0.5, 1] so that many workers hit by the same outage do not retry in lockstep.
    Retrying stops after ``max_attempts`` requests, when the next wait would end beyond
    ``max_total_seconds`` since the first request, or when the server asks for a longer
    pause than ``max_retry_after``: then the queue's backoff is the better place to wait.

    ``sleep`` is injectable so tests run in milliseconds and can assert on the waits.
    """

    max_attempts: int = 3
    max_total_seconds: float = 30.0
    initial_wait: float = 0.5
    max_wait: float = 8.0
    max_retry_after: float = 20.0
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep)
    rng: random.Random = field(default_factory=random.Random)


def is_transient(exc: BaseException) -> bool:
    """True for failures a short wait can fix."""
    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in RETRYABLE_STATUS or exc.status_code >= 500
    return False


def retry_after_seconds(exc: BaseException | None, clock: Clock) -> float | None:
    """The pause a 429/503 response asks for: ``retry-after-ms`` (OpenAI, Azure), else
    ``Retry-After`` as seconds or as an HTTP date. None when absent or unparsable."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when: datetime = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, (when - clock.now()).total_seconds())


def server_message(exc: openai.APIError) -> str:
    """The server's own error text, sanitized and bounded."""
    body = exc.body
    message = None
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
    text = str(message if message is not None else (body if body is not None else exc.message))
    return sanitize_error(text, limit=MESSAGE_LIMIT)


def translate_error(exc: BaseException, attempts: int) -> Exception:
    """Map an SDK exception to the atum_ai error tree (never chaining the original)."""
    tries = f"after {attempts} attempt{'s' if attempts != 1 else ''}"
    if isinstance(exc, openai.APITimeoutError):
        return LLMRetryableError(f"LLM request timed out {tries}")
    if isinstance(exc, openai.APIConnectionError):
        return LLMRetryableError(
            f"LLM endpoint unreachable {tries}: {sanitize_error(exc.message, 200)}"
        )
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        detail = server_message(exc)
        if status in RETRYABLE_STATUS or status >= 500:
            return LLMRetryableError(
                f"LLM endpoint returned HTTP {status} {tries}: {detail}", status_code=status
            )
        return PermanentError(f"LLM endpoint refused the request (HTTP {status}): {detail}")
    if isinstance(exc, openai.OpenAIError):
        return PermanentError(f"LLM client error: {sanitize_error(exc, MESSAGE_LIMIT)}")
    return exc if isinstance(exc, Exception) else RuntimeError(sanitize_error(exc))


class InCallRetry:
    """Runs one request with the bounded tenacity loop described in :class:`RetrySettings`."""

    def __init__(self, settings: RetrySettings | None = None, clock: Clock | None = None) -> None:
        self.settings = settings or RetrySettings()
        self.clock = clock or SystemClock()

    def _wait(self, state: RetryCallState) -> float:
        s = self.settings
        exc = state.outcome.exception() if state.outcome else None
        asked = retry_after_seconds(exc, self.clock)
        if asked is not None:
            return asked  # _stop refuses it if it is longer than we are willing to wait
        backoff = min(s.max_wait, s.initial_wait * 2 ** (state.attempt_number - 1))
        return backoff * s.rng.uniform(0.5, 1.0)

    def _stop(self, state: RetryCallState) -> bool:
        s = self.settings
        if state.attempt_number >= s.max_attempts:
            return True
        if state.upcoming_sleep > s.max_retry_after:
            return True
        # idle_for counts the waits we asked for, so the budget also holds with a fake sleep.
        elapsed = max(state.seconds_since_start or 0.0, state.idle_for)
        return elapsed + state.upcoming_sleep > s.max_total_seconds

    @staticmethod
    def _log_retry(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        status = getattr(exc, "status_code", None) or type(exc).__name__
        log.warning(
            "LLM request failed (%s); retry %d in %.2fs",
            status,
            state.attempt_number,
            state.upcoming_sleep,
        )

    async def run(self, call: Callable[[], Awaitable[T]]) -> tuple[T, int]:
        """Await ``call()`` with retries; returns (result, requests made).

        Transient failures that outlast the budget become LLMRetryableError; non-transient
        SDK errors are returned to the caller untranslated (it may want to inspect a 400)."""
        retrying = AsyncRetrying(
            stop=self._stop,
            wait=self._wait,
            retry=retry_if_exception(is_transient),
            sleep=self.settings.sleep,
            before_sleep=self._log_retry,
            reraise=True,
        )
        attempts = 0
        failure: Exception | None = None
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    result = await call()
        except Exception as exc:
            if not is_transient(exc):
                raise
            failure = translate_error(exc, attempts)
        if failure is not None:
            raise failure  # outside the except block: no SDK exception as __context__
        return result, attempts
