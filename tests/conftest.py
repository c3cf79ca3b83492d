"""Shared fixtures: a real PostgreSQL, one migrated template per session, one database per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from atum_ai.clock import FrozenClock
from atum_ai.testing.pg import DatabaseFactory, find_or_start_server


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    with find_or_start_server() as url:
        yield url


@pytest.fixture(scope="session")
def db_factory(pg_server_url: str) -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(pg_server_url)
    factory.create_template()
    yield factory
    factory.drop_all()


@pytest.fixture
def db_url(db_factory: DatabaseFactory) -> Iterator[str]:
    url = db_factory.create()
    yield url
    db_factory.drop(url)


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[psycopg.AsyncConnection[dict[str, Any]]]:
    """A transactional connection (autocommit off, dict rows) to this test's own database."""
    conn = await psycopg.AsyncConnection.connect(db_url, row_factory=dict_row)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """An autocommit connection to this test's own database (each statement commits)."""
    c = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[AsyncConnectionPool]:
    p = AsyncConnectionPool(db_url, min_size=1, max_size=12, open=False,
                            kwargs={"autocommit": True})
    await p.open(wait=True)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def org() -> uuid.UUID:
    return uuid.uuid4()
