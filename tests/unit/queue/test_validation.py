import uuid
from datetime import UTC, datetime

import pytest

from atum_ai.errors import PayloadValidationError, ValidationError
from atum_ai.queue.models import NewJob
from atum_ai.queue.validation import check_job_fields, prepare_payload


def test_payload_is_serialised_compactly_with_aware_datetimes():
    text = prepare_payload("X", {"a": 1, "when": datetime(2026, 1, 1, tzinfo=UTC), "u": "é"})
    assert text == '{"a":1,"when":"2026-01-01T00:00:00+00:00","u":"é"}'


def test_deep_nesting_is_refused_with_a_path():
    deep: dict = {}
    cur = deep
    for _ in range(100):
        cur["x"] = {}
        cur = cur["x"]
    with pytest.raises(PayloadValidationError, match="nested deeper"):
        prepare_payload("X", deep)


@pytest.mark.parametrize("payload", [[1, 2], "text", None, 3])
def test_payload_must_be_an_object(payload):
    with pytest.raises(PayloadValidationError) as err:
        prepare_payload("X", payload)
    assert err.value.field == "payload"


def test_size_limit_names_the_sizes():
    with pytest.raises(PayloadValidationError, match="over the limit of 100 bytes"):
        prepare_payload("X", {"s": "x" * 200}, max_bytes=100)


def test_unserialisable_values_are_refused():
    with pytest.raises(PayloadValidationError) as err:
        prepare_payload("X", {"obj": object()})
    assert err.value.field == "payload.obj"


@pytest.mark.parametrize(
    ("kw", "field"),
    [({"job_type": "1abc"}, "job_type"), ({"job_type": "a b"}, "job_type"),
     ({"dedupe_key": ""}, "dedupe_key"), ({"dedupe_key": "k\x00"}, "dedupe_key"),
     ({"max_retries": -1}, "max_retries"), ({"priority": 10**9}, "priority"),
     ({"timeout_seconds": 0}, "timeout_seconds")],
)
def test_job_fields(kw, field):
    base = {"organization_id": uuid.uuid4(), "job_type": "OK"}
    with pytest.raises(ValidationError) as err:
        check_job_fields(NewJob(**{**base, **kw}))
    assert err.value.field == field
