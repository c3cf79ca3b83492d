"""Settings, read once at the edge (the CLI) and passed down.

Every setting has an ``ATUM_*`` environment variable; CLI flags override them.
pydantic-settings is used because it gives typed parsing, ``SecretStr`` for the API key
(never printed in reprs or logs) and JSON parsing of dict-valued variables for free.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlparse

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


# Bounds shared by the settings, the worker's flags and WorkerConfig (one place to change).
MAX_CONCURRENCY = 10_000
MAX_POOL_SIZE = 10_000
MAX_SECONDS = 86_400  # lease, grace and job timeouts: a day


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ATUM_", extra="ignore", frozen=True)

    # --- database -------------------------------------------------------------------------
    database_url: str | None = Field(
        default=None, description="PostgreSQL URL; unset means the embedded server (demo)."
    )
    data_dir: str | None = Field(default=None, description="Embedded PostgreSQL data directory.")

    # --- queue ----------------------------------------------------------------------------
    max_payload_bytes: int = Field(default=1024 * 1024, gt=0)
    backoff_base_seconds: float = Field(default=2.0, gt=0)
    backoff_cap_seconds: float = Field(default=3600.0, gt=0)
    backoff_jitter: float = Field(default=0.25, ge=0, lt=1)

    # --- worker ---------------------------------------------------------------------------
    concurrency: int = Field(default=16, ge=1, le=MAX_CONCURRENCY)
    lease_seconds: float = Field(default=30.0, ge=1, le=MAX_SECONDS)
    grace_seconds: float = Field(default=20.0, ge=0, le=MAX_SECONDS)
    poll_interval_seconds: float = Field(default=2.0, ge=0.01, le=3_600)
    job_timeout_seconds: float = Field(default=300.0, ge=0.001, le=MAX_SECONDS)
    job_timeouts: dict[str, float] = Field(default_factory=dict, description="Per job type.")
    pool_size: int | None = Field(default=None, ge=1, le=MAX_POOL_SIZE)
    retention_days: float = Field(default=14.0, gt=0, le=36_500)
    # How often each worker rescues expired leases (and, every purge interval, purges by
    # retention). Short values are for tests and small deployments that want fast recovery.
    maintenance_interval_seconds: float = Field(default=5.0, gt=0)
    purge_interval_seconds: float = Field(default=3600.0, gt=0)
    metrics_cron: str = "15 0 * * *"
    metrics_timezone: str = "UTC"

    # --- LLM ------------------------------------------------------------------------------
    llm_base_url: str | None = None
    llm_api_key: SecretStr | None = None
    llm_model: str | None = None
    llm_task_models: dict[str, str] = Field(
        default_factory=dict, description='Per-task model, e.g. {"SMART_REPLY": "gpt-4o"}.'
    )
    llm_timeout_seconds: float = 30.0
    llm_prices: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description="USD per 1M tokens (input, output) by model name, for cost accounting.",
    )
    pii_masking: Literal["auto", "on", "off"] = "auto"

    # --- local models ---------------------------------------------------------------------
    review_threshold: float = 0.55

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        # Checked here, where the names are the operator's (ATUM_*), rather than deep in the
        # retry policy where a ValueError would not say which variable to fix.
        for job_type, timeout in self.job_timeouts.items():
            if not 0.001 <= timeout <= MAX_SECONDS:  # NaN fails this too
                raise ValueError(f"ATUM_JOB_TIMEOUTS: the timeout of {job_type} must be between "
                                 f"0.001 and {MAX_SECONDS} seconds, not {timeout!r}")
        if self.backoff_base_seconds > self.backoff_cap_seconds:
            raise ValueError(
                f"ATUM_BACKOFF_BASE_SECONDS ({self.backoff_base_seconds:g}) must not exceed "
                f"ATUM_BACKOFF_CAP_SECONDS ({self.backoff_cap_seconds:g})")
        return self

    @classmethod
    def from_env(cls) -> Settings:
        """Settings from the environment, or a ConfigError naming the variable that is wrong."""
        import pydantic
        from pydantic_settings import SettingsError

        from atum_ai.errors import ConfigError

        try:
            return cls()
        except SettingsError as exc:  # a dict-valued variable that is not JSON
            field = str(exc).split('"')[1] if '"' in str(exc) else ""
            raise ConfigError(f"invalid configuration: ATUM_{field.upper()} must be a JSON "
                              f"object") from None
        except pydantic.ValidationError as exc:
            problems = []
            for err in exc.errors(include_url=False, include_input=False):
                loc = "_".join(str(p) for p in err.get("loc", ()) if p != "__root__")
                name = f"ATUM_{loc.upper()}: " if loc else ""
                msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
                problems.append(f"{name}{msg}")
            raise ConfigError("invalid configuration: " + "; ".join(problems)) from None

    @property
    def llm_configured(self) -> bool:
        return bool(self.llm_base_url and self.llm_model)

    def model_for(self, job_type: str) -> str | None:
        return self.llm_task_models.get(job_type, self.llm_model)

    @property
    def llm_is_local(self) -> bool:
        """True when the LLM endpoint is on this machine (no PII leaves it)."""
        if not self.llm_base_url:
            return True
        host = (urlparse(self.llm_base_url).hostname or "").lower()
        return host in {"localhost", "127.0.0.1", "::1"} or host.startswith("127.")

    @property
    def mask_pii(self) -> bool:
        if self.pii_masking == "auto":
            return not self.llm_is_local
        return self.pii_masking == "on"
