import math

import pytest

from atum_ai.config import Settings
from atum_ai.errors import ConfigError
from atum_ai.worker.service import WorkerConfig


@pytest.mark.parametrize("lease", [0, 0.5, math.inf, math.nan, 1e30, -1])
def test_worker_refuses_a_lease_outside_one_second_to_a_week(lease):
    with pytest.raises(ConfigError, match="lease must be between 1 and 86400"):
        WorkerConfig(lease_seconds=lease)


@pytest.mark.parametrize(("field", "value"), [("concurrency", 0), ("grace_seconds", math.inf),
                                               ("default_timeout", -5), ("poll_interval", math.nan)])
def test_worker_refuses_other_out_of_range_settings(field, value):
    with pytest.raises(ConfigError):
        WorkerConfig(**{field: value})


def test_worker_refuses_a_negative_timeout_for_one_type():
    with pytest.raises(ConfigError, match="timeout of TEST_SLEEP"):
        WorkerConfig(job_timeouts={"TEST_SLEEP": -5})


@pytest.mark.parametrize(("env", "value", "named"), [
    ("ATUM_LEASE_SECONDS", "inf", "ATUM_LEASE_SECONDS"),
    ("ATUM_LEASE_SECONDS", "nan", "ATUM_LEASE_SECONDS"),
    ("ATUM_CONCURRENCY", "0", "ATUM_CONCURRENCY"),
    ("ATUM_CONCURRENCY", "many", "ATUM_CONCURRENCY"),
    ("ATUM_JOB_TIMEOUTS", '{"TEST_SLEEP": -5}', "ATUM_JOB_TIMEOUTS"),
    ("ATUM_JOB_TIMEOUTS", "{not json", "ATUM_JOB_TIMEOUTS"),
    ("ATUM_BACKOFF_BASE_SECONDS", "7200", "ATUM_BACKOFF_BASE_SECONDS"),
])
def test_settings_errors_name_the_variable(monkeypatch, env, value, named):
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError, match=named):
        Settings.from_env()


def test_settings_from_a_clean_environment_are_valid(monkeypatch):
    for name in ("ATUM_LEASE_SECONDS", "ATUM_CONCURRENCY", "ATUM_JOB_TIMEOUTS"):
        monkeypatch.delenv(name, raising=False)
    s = Settings.from_env()
    assert s.lease_seconds == 30 and s.backoff_base_seconds <= s.backoff_cap_seconds
