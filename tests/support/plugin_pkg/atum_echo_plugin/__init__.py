"""PLUGIN_ECHO: a third-party handler, registered only through its entry point."""

from __future__ import annotations

from pydantic import Field

from atum_ai.handlers.base import Handler, HandlerContext, HandlerResult, Payload, Result


class EchoPayload(Payload):
    message: str = Field(min_length=1, max_length=200)
    times: int = Field(default=1, ge=1, le=5)


class EchoResult(Result):
    echoed: str
    organization_id: str
    attempt: int


class EchoHandler(Handler[EchoPayload, EchoResult]):
    job_type = "PLUGIN_ECHO"
    Payload = EchoPayload
    Result = EchoResult
    description = "Echo a message (atum_ai plugin test)"

    async def handle(self, payload: EchoPayload, ctx: HandlerContext) -> HandlerResult[EchoResult]:
        return HandlerResult(
            EchoResult(echoed=" ".join([payload.message] * payload.times),
                       organization_id=str(ctx.organization_id), attempt=ctx.attempt),
            audit={"source": "plugin", "model": "echo"},
        )


class DuplicateTriageHandler(EchoHandler):
    """Claims a built-in job type. Not exposed by this package's entry points: the duplicate
    test exposes it through a second distribution, which must stop the worker at startup."""

    job_type = "TRIAGE_TICKET"
