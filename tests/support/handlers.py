"""Small handlers for queue and worker tests (loaded with ``--plugin tests.support.handlers:ALL``)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from psycopg import AsyncConnection

from atum_ai.errors import PermanentError, RetryableError
from atum_ai.handlers.base import FollowUp, Handler, HandlerContext, HandlerResult, Payload, Result
from atum_ai.queue.models import Job


class NoopPayload(Payload):
    n: int = 0


class StartedResult(Result):
    started_at: float  # time.time() when the handler started (pickup latency)
    attempt: int = 1


class NoopHandler(Handler[NoopPayload, StartedResult]):
    job_type = "TEST_NOOP"
    Payload = NoopPayload
    Result = StartedResult

    async def handle(self, payload: NoopPayload, ctx: HandlerContext) -> HandlerResult[StartedResult]:
        return HandlerResult(StartedResult(started_at=time.time(), attempt=ctx.attempt))


class SleepPayload(Payload):
    seconds: float
    n: int = 0


class SleepHandler(Handler[SleepPayload, StartedResult]):
    """Sleeps, then records its effect once per job (chaos/exactly-once checks)."""

    job_type = "TEST_SLEEP"
    Payload = SleepPayload
    Result = StartedResult

    async def handle(self, payload: SleepPayload, ctx: HandlerContext) -> HandlerResult[StartedResult]:
        started = time.time()
        await asyncio.sleep(payload.seconds)
        return HandlerResult(StartedResult(started_at=started, attempt=ctx.attempt))

    async def persist(self, conn: AsyncConnection[Any], job: Job, outcome: HandlerResult[StartedResult]) -> None:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS test_effects (job_id uuid, organization_id uuid, at timestamptz DEFAULT now())")
        await conn.execute("INSERT INTO test_effects (job_id, organization_id) VALUES (%s, %s)",
                           (job.id, job.organization_id))


class ForeverHandler(Handler[NoopPayload, StartedResult]):
    job_type = "TEST_FOREVER"
    Payload = NoopPayload
    Result = StartedResult
    timeout_seconds = 1.0

    async def handle(self, payload: NoopPayload, ctx: HandlerContext) -> HandlerResult[StartedResult]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


class FailPayload(Payload):
    permanent: bool = False
    message: str = "boom"


class FailHandler(Handler[FailPayload, StartedResult]):
    job_type = "TEST_FAIL"
    Payload = FailPayload
    Result = StartedResult

    async def handle(self, payload: FailPayload, ctx: HandlerContext) -> HandlerResult[StartedResult]:
        if payload.permanent:
            raise PermanentError(payload.message)
        raise RetryableError(payload.message)


class ChainHandler(Handler[NoopPayload, StartedResult]):
    job_type = "TEST_CHAIN"
    Payload = NoopPayload
    Result = StartedResult

    async def handle(self, payload: NoopPayload, ctx: HandlerContext) -> HandlerResult[StartedResult]:
        return HandlerResult(
            StartedResult(started_at=time.time()),
            follow_ups=[FollowUp("TEST_NOOP", {"n": payload.n * 10 + 1}),
                        FollowUp("TEST_NOOP", {"n": payload.n * 10 + 2})],
        )


ALL = [NoopHandler, SleepHandler, ForeverHandler, FailHandler, ChainHandler]
