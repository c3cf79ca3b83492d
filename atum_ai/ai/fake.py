"""A scripted :class:`~atum_ai.ai.client.LLMClient` for handler tests (no HTTP at all).

pydantic-ai's ``TestModel`` idea: a handler test says what the "model" answers and then
asserts on the handler's result and on what was asked. Answers still go through the real
validation (result model + the handler's ``validate`` callback), so a handler that would
reject a real model's answer rejects the scripted one too.

    fake = FakeLLMClient({"TRIAGE_TICKET": [{"queue": "Billing", ...}]})
    ctx = HandlerContext(..., llm=fake)
    ...
    assert fake.calls[0].prompt.name == "TRIAGE_TICKET"
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pydantic
from pydantic import BaseModel

from atum_ai.ai.client import StructuredOutcome
from atum_ai.ai.prompts import RenderedPrompt
from atum_ai.ai.usage import Usage
from atum_ai.errors import LLMOutputError

T = TypeVar("T", bound=BaseModel)
Answer = Mapping[str, Any] | BaseModel | Exception


@dataclass(frozen=True, slots=True)
class FakeCall:
    job_type: str
    prompt: RenderedPrompt
    result_model: type[BaseModel]
    mask_pii: bool


class FakeLLMClient:
    """Answers each job type from a queue of scripted answers (dicts, models or exceptions).

    An exception in the script is raised (to test LLMRetryableError handling, say); an answer
    that fails validation raises LLMOutputError, as the real client does after its re-ask.
    """

    def __init__(
        self,
        answers: Mapping[str, Sequence[Answer]] | None = None,
        *,
        model: str = "fake-model",
        usage: Usage | None = None,
    ) -> None:
        self._answers = {k: list(v) for k, v in (answers or {}).items()}
        self.model = model
        self.usage = usage or Usage(10, 5, 15)
        self.calls: list[FakeCall] = []

    def add(self, job_type: str, *answers: Answer) -> None:
        self._answers.setdefault(job_type, []).extend(answers)

    def model_for(self, job_type: str) -> str:
        return self.model

    async def aclose(self) -> None:
        return None

    async def complete_structured(
        self,
        job_type: str,
        prompt: RenderedPrompt,
        result_model: type[T],
        *,
        mask_pii: bool,
        validate: Callable[[T], None] | None = None,
    ) -> StructuredOutcome[T]:
        self.calls.append(FakeCall(job_type, prompt, result_model, mask_pii))
        queue = self._answers.get(job_type)
        if not queue:
            raise AssertionError(f"FakeLLMClient has no scripted answer left for {job_type}")
        answer = queue.pop(0)
        if isinstance(answer, Exception):
            raise answer
        data = answer.model_dump() if isinstance(answer, BaseModel) else dict(answer)
        try:
            value = result_model.model_validate(data)
            if validate is not None:
                validate(value)
        except (pydantic.ValidationError, ValueError) as exc:
            raise LLMOutputError(f"{job_type}: scripted answer invalid: {exc}", attempts=2) from exc
        return StructuredOutcome(
            value=value,
            model=self.model,
            usage=self.usage,
            cost_usd=0.0,
            latency_ms=0.0,
            attempts=1,
            prompt_name=prompt.name,
            prompt_sha256=prompt.sha256,
        )
