from __future__ import annotations

import pytest
from pydantic import BaseModel

from atum_ai.ai.client import LLMClient
from atum_ai.ai.fake import FakeLLMClient
from atum_ai.ai.prompts import RenderedPrompt
from atum_ai.errors import LLMOutputError, LLMRetryableError

PROMPT = RenderedPrompt(name="T", sha256="0" * 64, system="s", user="u")


class Result(BaseModel):
    label: str


async def test_fake_answers_in_order_and_records_calls() -> None:
    fake = FakeLLMClient({"T": [{"label": "a"}, Result(label="b")]})
    client: LLMClient = fake
    first = await client.complete_structured("T", PROMPT, Result, mask_pii=True)
    second = await client.complete_structured("T", PROMPT, Result, mask_pii=False)
    assert (first.value.label, second.value.label) == ("a", "b")
    assert [c.mask_pii for c in fake.calls] == [True, False]
    assert first.prompt_sha256 == "0" * 64


async def test_fake_raises_scripted_errors_and_validates() -> None:
    fake = FakeLLMClient({"T": [LLMRetryableError("down"), {"label": "x"}]})
    with pytest.raises(LLMRetryableError):
        await fake.complete_structured("T", PROMPT, Result, mask_pii=False)

    def reject(_: Result) -> None:
        raise ValueError("not in taxonomy")

    with pytest.raises(LLMOutputError):
        await fake.complete_structured("T", PROMPT, Result, mask_pii=False, validate=reject)
    with pytest.raises(AssertionError):
        await fake.complete_structured("T", PROMPT, Result, mask_pii=False)
