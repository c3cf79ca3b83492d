"""Prometheus metrics of one worker process (prometheus-client, the reference client).

Metrics live in a private registry so that tests can build many workers in one process.
"""

from __future__ import annotations

import errno

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from atum_ai.errors import ConfigError


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.jobs = Counter(
            "atum_jobs_total", "Finished job attempts by type and outcome",
            ["job_type", "outcome"], registry=self.registry,
        )
        self.duration = Histogram(
            "atum_job_duration_seconds", "Handler run time by job type", ["job_type"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "atum_queue_depth", "Jobs by status (sampled)", ["status"], registry=self.registry
        )
        self.busy_slots = Gauge("atum_worker_busy_slots", "Jobs running now", registry=self.registry)
        self.slots = Gauge("atum_worker_slots", "Configured concurrency", registry=self.registry)
        self.last_poll = Gauge(
            "atum_worker_last_successful_poll_timestamp_seconds",
            "Unix time of the last claim query that succeeded", registry=self.registry,
        )
        self.lost_claims = Counter(
            "atum_worker_lost_claims_total", "Completions fenced out (lease lost)",
            registry=self.registry,
        )

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        """Serve /metrics; a port that cannot be bound is a ConfigError saying why (the
        worker calls this first thing, so a bad port fails at start)."""
        try:
            start_http_server(port, addr=addr, registry=self.registry)
        except OSError as exc:
            why = {errno.EADDRINUSE: "the port is already in use",
                   errno.EACCES: "permission denied (ports below 1024 need privileges)"}.get(
                exc.errno or 0, exc.strerror or str(exc))
            raise ConfigError(f"--metrics-port: cannot serve metrics on {addr}:{port}: {why}") from None
