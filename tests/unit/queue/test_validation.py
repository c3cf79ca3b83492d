import enum
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


# The plain-JSON fast path must refuse exactly what the field-by-field walk refuses, with the
# same field, wherever the bad value sits (top level, nested, in a key).
@pytest.mark.parametrize(
    ("payload", "field", "words"),
    [
        ({"s": "a\x00b"}, "payload.s", "NUL"),
        ({"a": {"b": ["ok", "x\x00"]}}, "payload.a.b[1]", "NUL"),
        ({"k\x00": 1}, 'payload["k\\u0000"]', "NUL"),
        ({"s": "\ud800"}, "payload.s", "surrogate"),
        ({"a": [{"\udfff": 1}]}, 'payload.a[0]["\\udfff"]', "surrogate"),
        ({"f": float("nan")}, "payload.f", "NaN"),
        ({"a": [1, float("inf")]}, "payload.a[1]", "NaN"),
        ({"n": 2**2000}, "payload.n", "too large"),
        ({"a": {1: "x"}}, "payload.a", "keys must be strings"),
    ],
)
def test_bad_values_are_refused_with_their_field_wherever_they_sit(payload, field, words):
    with pytest.raises(PayloadValidationError, match=words) as err:
        prepare_payload("X", payload)
    assert err.value.field == field


def test_plain_and_converted_payloads_serialise_the_same_way():
    """A backslash followed by 'u0000' is text, not a NUL: accepted and kept as it was."""

    class Colour(enum.StrEnum):
        RED = "red"

    assert prepare_payload("X", {"path": "C:\\u0000dir"}) == '{"path":"C:\\\\u0000dir"}'
    assert prepare_payload("X", {"c": Colour.RED, "t": (1, 2), "u": uuid.UUID(int=1)}) == (
        '{"c":"red","t":[1,2],"u":"00000000-0000-0000-0000-000000000001"}')
    assert prepare_payload("X", {"a": [1, 2.5, True, None, {"b": "é"}]}) == '{"a":[1,2.5,true,null,{"b":"é"}]}'


def test_a_payload_that_contains_itself_is_refused_not_a_recursion_error():
    loop: dict = {}
    loop["self"] = loop
    with pytest.raises(PayloadValidationError, match="nested deeper"):
        prepare_payload("X", loop)
