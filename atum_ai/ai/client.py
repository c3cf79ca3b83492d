"""The LLM client: one OpenAI-compatible endpoint, typed answers, bounded failure.

Any server that speaks the OpenAI chat-completions API works (OpenAI, Azure OpenAI, vLLM,
Ollama, llama.cpp, LiteLLM): only ``base_url``, the key and the model names change.
Handlers talk to the :class:`LLMClient` protocol, so tests and alternative back ends can
stand in without HTTP.

One call of :meth:`OpenAICompatClient.complete_structured`:

1. mask personal data in the prompt (one :class:`~atum_ai.ai.pii.PiiMasker` per call);
2. send it, asking for JSON that fits the result model (see ``structured.py`` for the
   json_schema -> json_object -> prompt fallback, remembered per client);
3. retry transient failures briefly in-call (``retrying.py``), else raise
   LLMRetryableError for the queue's backoff, or PermanentError for a refused request;
4. validate the answer (pydantic + the caller's domain check); re-ask once with the error;
   still invalid -> LLMOutputError carrying attempts and usage;
5. unmask the validated result, and report usage, cost, latency and the prompt's identity.

The API key is registered with :mod:`atum_ai.redact` at construction, so it is masked in
every message that is logged or stored, and SDK exceptions never escape untranslated.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import httpx
import openai
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion
from pydantic import BaseModel

from atum_ai.ai.pii import PiiMasker
from atum_ai.ai.prompts import RenderedPrompt
from atum_ai.ai.retrying import InCallRetry, RetrySettings, translate_error
from atum_ai.ai.structured import (
    FORMAT_LADDER,
    InvalidOutput,
    Message,
    OutputFormat,
    check_no_instruction_echo,
    completion_text,
    instruction_lines,
    parse_output,
    reask_messages,
    rejects_response_format,
    response_format_for,
    run_validator,
    with_format,
)
from atum_ai.ai.usage import Usage, cost_usd
from atum_ai.clock import Clock
from atum_ai.config import Settings
from atum_ai.errors import ConfigError, LLMOutputError
from atum_ai.redact import register_secret, sanitize_error

log = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)

MAX_ANSWERS = 2  # the first answer plus exactly one re-ask
# The SDK insists on a key; local servers (Ollama, llama.cpp) ignore it. An explicit
# placeholder also stops the SDK from silently picking up OPENAI_API_KEY from the environment.
NO_KEY = "no-key"


@dataclass(frozen=True, slots=True)
class StructuredOutcome(Generic[T]):
    """A validated answer plus the facts the audit trail and metrics need."""

    value: T
    model: str
    usage: Usage
    cost_usd: float
    latency_ms: float
    attempts: int  # answers requested: 1, or 2 after a re-ask
    prompt_name: str
    prompt_sha256: str
    output_format: str = OutputFormat.JSON_SCHEMA.value
    requests: int = 1  # HTTP requests including in-call retries and format fallbacks
    pii_masked: int = 0  # how many distinct values were masked (never which)

    def audit(self) -> dict[str, Any]:
        """Facts for ``HandlerResult.audit`` (stored with the SUCCEEDED event)."""
        return {
            "source": "llm",
            "model": self.model,
            "prompt": self.prompt_name,
            "prompt_sha256": self.prompt_sha256,
            "usage": self.usage.as_dict(),
            "cost_usd": self.cost_usd,
            "latency_ms": round(self.latency_ms, 1),
            "attempts": self.attempts,
            "requests": self.requests,
            "output_format": self.output_format,
            "pii_masked": self.pii_masked,
        }


class LLMClient(Protocol):
    """What handlers may ask of an LLM. Implement it to plug in a fake or another back end."""

    def model_for(self, job_type: str) -> str:
        """The model that serves ``job_type``."""
        ...

    async def complete_structured(
        self,
        job_type: str,
        prompt: RenderedPrompt,
        result_model: type[T],
        *,
        mask_pii: bool,
        validate: Callable[[T], None] | None = None,
    ) -> StructuredOutcome[T]:
        """Ask for a ``result_model`` answer to ``prompt``.

        Raises LLMRetryableError (endpoint unavailable), PermanentError (request refused)
        or LLMOutputError (answer still invalid after one re-ask). ``validate`` rejects a
        well-formed answer by raising ValueError; its message is shown to the model.
        """
        ...

    async def aclose(self) -> None: ...


class OpenAICompatClient:
    """:class:`LLMClient` over the openai SDK (``AsyncOpenAI``) for any compatible server.

    Safe to share between concurrent jobs: the only mutable state is the remembered output
    format, which only ever steps down the ladder.
    """

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        task_models: Mapping[str, str] | None = None,
        timeout_seconds: float = 30.0,
        prices: Mapping[str, tuple[float, float]] | None = None,
        retry: RetrySettings | None = None,
        clock: Clock | None = None,
        http_client: httpx.AsyncClient | None = None,
        request_options: Mapping[str, Any] | None = None,
    ) -> None:
        if not base_url or not model:
            raise ConfigError("the LLM client needs a base_url and a model")
        register_secret(api_key)
        self.base_url = base_url
        self.default_model = model
        self.task_models = dict(task_models or {})
        self.prices = dict(prices or {})
        # Extra chat-completion parameters (temperature, max_tokens, seed ...). Not set by
        # default: some models refuse parameters such as temperature.
        self.request_options = dict(request_options or {})
        self._retry = InCallRetry(retry, clock)
        self._format_index = 0

        def sdk(client: httpx.AsyncClient | None) -> AsyncOpenAI:
            return AsyncOpenAI(
                api_key=api_key or NO_KEY,
                base_url=base_url,
                timeout=timeout_seconds,
                max_retries=0,  # in-call retries are ours (bounded); job retries are the queue's
                http_client=client,
            )

        self._lanes = _Lanes(sdk, http_client)

    def __repr__(self) -> str:
        return f"<OpenAICompatClient base_url={self.base_url!r} model={self.default_model!r}>"

    @property
    def output_format(self) -> OutputFormat:
        """The structured-output mode the next request will try first."""
        return FORMAT_LADDER[self._format_index]

    def model_for(self, job_type: str) -> str:
        return self.task_models.get(job_type, self.default_model)

    async def aclose(self) -> None:
        await self._lanes.aclose()

    async def complete_structured(
        self,
        job_type: str,
        prompt: RenderedPrompt,
        result_model: type[T],
        *,
        mask_pii: bool,
        validate: Callable[[T], None] | None = None,
    ) -> StructuredOutcome[T]:
        model = self.model_for(job_type)
        started = time.perf_counter()
        masker = PiiMasker() if mask_pii else None
        messages: list[Message] = [
            {
                "role": "system",
                "content": prompt.system if masker is None else masker.mask(prompt.system),
            },
            {
                "role": "user",
                "content": prompt.user if masker is None else masker.mask(prompt.user),
            },
        ]
        usage = Usage()
        requests = 0
        reason = ""
        echo_lines = instruction_lines(prompt.system)
        for answer in range(1, MAX_ANSWERS + 1):
            completion, fmt, made = await self._create(model, messages, result_model)
            requests += made
            usage += Usage.from_response(getattr(completion, "usage", None))
            content = ""
            try:
                content = completion_text(completion)
                finish = completion.choices[0].finish_reason
                parsed = parse_output(content, result_model, finish_reason=finish)
                value: T = parsed  # type: ignore[assignment]
                if masker is not None:
                    value = _unmask_result(masker, value)
                check_no_instruction_echo(value, echo_lines)
                run_validator(validate, value)  # type: ignore[arg-type]
            except InvalidOutput as exc:
                # The reason may quote unmasked values (the validator saw the real result):
                # mask it with the same session so the re-ask leaks nothing new.
                reason = exc.reason if masker is None else masker.mask(exc.reason)
                log.info(
                    "LLM answer %d for %s invalid; %s",
                    answer,
                    job_type,
                    "re-asking" if answer < MAX_ANSWERS else "giving up",
                )
                messages = messages[:2] + reask_messages(content, reason)
                continue
            answered_model = getattr(completion, "model", None) or model
            return StructuredOutcome(
                value=value,
                model=answered_model,
                usage=usage,
                cost_usd=cost_usd(usage, self.prices, model, answered_model),
                latency_ms=(time.perf_counter() - started) * 1000.0,
                attempts=answer,
                prompt_name=prompt.name,
                prompt_sha256=prompt.sha256,
                output_format=fmt.value,
                requests=requests,
                pii_masked=0 if masker is None else masker.size,
            )
        raise LLMOutputError(
            sanitize_error(
                f"{job_type}: model output invalid after {MAX_ANSWERS} answers: {reason}",
                limit=1000,
            ),
            attempts=MAX_ANSWERS,
            usage=usage.as_dict(),
        )

    async def _create(
        self, model: str, messages: list[Message], result_model: type[BaseModel]
    ) -> tuple[Any, OutputFormat, int]:
        """One answer: walks down the format ladder on "response_format not supported".

        Returns (completion, format used, HTTP requests made)."""
        made = 0
        while True:
            index = self._format_index
            fmt = FORMAT_LADDER[index]
            kwargs: dict[str, Any] = {
                **self.request_options,
                "model": model,
                "messages": with_format(messages, fmt, result_model),
            }
            response_format = response_format_for(fmt, result_model)
            if response_format is not None:
                kwargs["response_format"] = response_format

            async def call(body: dict[str, Any] = kwargs) -> Any:
                # The SDK's generic ``post`` (its documented way to send any request) instead
                # of ``chat.completions.create``: the same request, headers, error types and
                # typed ChatCompletion back, without the per-call walk that maps every
                # parameter through its TypedDict annotations (half of the SDK's CPU time per
                # call here, ~1.5 ms, for a body that is plain JSON already).
                async with self._lanes.use() as sdk:
                    return await sdk.post("/chat/completions", body=body, cast_to=ChatCompletion)

            try:
                completion, attempts = await self._retry.run(call)
                return completion, fmt, made + attempts
            except openai.APIStatusError as exc:
                made += 1
                fallback = rejects_response_format(exc) and index + 1 < len(FORMAT_LADDER)
                failure = None if fallback else translate_error(exc, made)
            except openai.OpenAIError as exc:
                failure = translate_error(exc, made + 1)
            if failure is not None:
                # Raised outside the except block so the SDK exception (whose text may echo
                # request details) is not even attached as __context__.
                raise failure
            # Remember per client: every later call starts on the rung that works.
            self._format_index = max(self._format_index, index + 1)
            log.warning(
                "LLM server at %s rejected response_format %s; falling back to %s",
                self.base_url,
                fmt.value,
                FORMAT_LADDER[self._format_index].value,
            )


class _Lanes:
    """Several SDK clients, each with a small HTTP connection pool, shared by concurrent jobs.

    httpcore 1.0's pool does work quadratic in its connection count on every request and
    response (``_assign_requests_to_connections``: an ``is_idle`` scan per connection, and a
    readability poll of every idle one; encode/httpcore#1035): with 64 jobs waiting on the
    LLM through one pool that bookkeeping took more CPU than everything else in the job
    (measured here: 9.8 ms of CPU per call through one pool of 100 connections, 1.3 ms
    through lanes of 4, with a fake server answering after 50 ms).
    Pools of at most :data:`LANE_CONNECTIONS` keep it small; a request takes the least busy
    lane, and a new lane opens when all are full (up to :data:`MAX_LANES`). A caller that
    passes its own ``http_client`` gets exactly that one client.
    """

    def __init__(self, make: Callable[[httpx.AsyncClient | None], AsyncOpenAI],
                 http_client: httpx.AsyncClient | None) -> None:
        self._make = make
        self._fixed = http_client is not None
        self._sdks = [make(http_client if self._fixed else self._http())]
        self._busy = [0]

    @staticmethod
    def _http() -> httpx.AsyncClient:
        # The SDK's own defaults (timeouts, redirects), with a pool sized for one lane.
        return openai.DefaultAsyncHttpxClient(limits=httpx.Limits(
            max_connections=2 * LANE_CONNECTIONS, max_keepalive_connections=LANE_CONNECTIONS))

    @contextlib.asynccontextmanager
    async def use(self) -> AsyncIterator[AsyncOpenAI]:
        i = min(range(len(self._busy)), key=self._busy.__getitem__)
        if self._busy[i] >= LANE_CONNECTIONS and not self._fixed and len(self._sdks) < MAX_LANES:
            self._sdks.append(self._make(self._http()))
            self._busy.append(0)
            i = len(self._sdks) - 1
        self._busy[i] += 1
        try:
            yield self._sdks[i]
        finally:
            self._busy[i] -= 1

    async def aclose(self) -> None:
        for sdk in self._sdks:
            await sdk.close()


LANE_CONNECTIONS = 4
MAX_LANES = 32


def _unmask_result(masker: PiiMasker, value: T) -> T:
    try:
        return masker.unmask_model(value)
    except ValueError as exc:  # pydantic.ValidationError: a validator disliked a real value
        raise InvalidOutput(str(exc)) from exc


def build_llm_client(settings: Settings, **overrides: Any) -> LLMClient | None:
    """The configured client, or None when no LLM is configured (local models then serve
    every task). ``overrides`` reach :class:`OpenAICompatClient` (tests, custom retries)."""
    if not settings.llm_configured:
        return None
    assert settings.llm_base_url and settings.llm_model  # narrowed by llm_configured
    key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
    options: dict[str, Any] = {
        "base_url": settings.llm_base_url,
        "model": settings.llm_model,
        "api_key": key,
        "task_models": settings.llm_task_models,
        "timeout_seconds": settings.llm_timeout_seconds,
        "prices": settings.llm_prices,
        **overrides,
    }
    return OpenAICompatClient(**options)
