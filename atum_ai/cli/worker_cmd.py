"""``atum-ai worker``: the long-running service (see deploy/ for the systemd unit)."""

from __future__ import annotations

import argparse

from atum_ai.cli.queue_cmds import check_int, check_seconds
from atum_ai.cli.runner import CommandEnv
from atum_ai.config import MAX_CONCURRENCY, MAX_POOL_SIZE, MAX_SECONDS
from atum_ai.errors import ConfigError
from atum_ai.runtime import build_context_builder, open_pool
from atum_ai.worker.service import Worker, WorkerConfig, required_pool_size


def check_worker_flags(args: argparse.Namespace) -> None:
    """Flags given on the command line, checked with an error naming the flag (the ATUM_*
    settings are checked, naming the variable, by Settings)."""
    if args.concurrency is not None:
        check_int(args.concurrency, "--concurrency", 1, MAX_CONCURRENCY)
    if args.lease is not None:
        check_seconds(args.lease, "--lease", 1, MAX_SECONDS)
    if args.grace is not None:
        check_seconds(args.grace, "--grace", 0, MAX_SECONDS)
    if args.pool_size is not None:
        check_int(args.pool_size, "--pool-size", 1, MAX_POOL_SIZE)
    if args.metrics_port is not None:
        check_int(args.metrics_port, "--metrics-port", 1, 65_535)


def worker_config(env: CommandEnv, args: argparse.Namespace) -> WorkerConfig:
    s = env.settings
    from datetime import timedelta

    check_worker_flags(args)
    # "is None", not "or": --concurrency 0 or --lease 0 used to become the default silently.
    return WorkerConfig(
        concurrency=s.concurrency if args.concurrency is None else args.concurrency,
        job_types=[t.strip() for t in args.types.split(",") if t.strip()] if args.types else None,
        lease_seconds=s.lease_seconds if args.lease is None else args.lease,
        grace_seconds=s.grace_seconds if args.grace is None else args.grace,
        poll_interval=s.poll_interval_seconds,
        default_timeout=s.job_timeout_seconds,
        job_timeouts=dict(s.job_timeouts),
        burst=args.burst,
        retention=timedelta(days=s.retention_days) if s.retention_days > 0 else None,
        maintenance_interval=s.maintenance_interval_seconds,
        purge_interval=s.purge_interval_seconds,
        metrics_port=args.metrics_port,
    )


async def cmd_worker(env: CommandEnv, args: argparse.Namespace) -> int:
    config = worker_config(env, args)
    needed = required_pool_size(config.concurrency)
    pool_size = args.pool_size if args.pool_size is not None else (env.settings.pool_size or needed)
    if pool_size < needed:
        raise ConfigError(
            f"connection pool too small: pool size {pool_size} but concurrency "
            f"{config.concurrency} needs at least {needed} (one per running job + 4 for "
            "claiming, completing, heartbeat and maintenance; LISTEN uses its own connection)"
        )
    registry = env.registry()
    store = env.store(registry)
    from atum_ai.pipeline.schedules import default_schedules

    schedules = [] if args.no_schedules else default_schedules(env.settings)
    async with open_pool(env.url, max_size=pool_size, min_size=min(4, pool_size)) as pool:
        builder = build_context_builder(env.settings, pool, env.clock)
        worker = Worker(pool=pool, conninfo=env.url, store=store, registry=registry,
                        context_factory=builder, config=config, schedules=schedules)
        try:
            return await worker.run()
        finally:
            if builder.llm is not None:
                await builder.llm.aclose()


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("worker", help="run jobs until stopped (SIGTERM/SIGINT drain gracefully)")
    p.add_argument("--concurrency", type=int,
                   help=f"jobs at once, 1-{MAX_CONCURRENCY} (ATUM_CONCURRENCY, default 16)")
    p.add_argument("--types", help="comma-separated job types to run (default: all)")
    p.add_argument("--burst", action="store_true", help="exit 0 when nothing is runnable")
    p.add_argument("--lease", type=float,
                   help=f"lease seconds, 1-{MAX_SECONDS} (ATUM_LEASE_SECONDS, default 30)")
    p.add_argument("--grace", type=float,
                   help=f"shutdown grace seconds, 0-{MAX_SECONDS} (ATUM_GRACE_SECONDS, default 20)")
    p.add_argument("--metrics-port", type=int,
                   help="serve Prometheus metrics on 127.0.0.1:PORT (1-65535)")
    p.add_argument("--pool-size", type=int,
                   help=f"connection pool size, 1-{MAX_POOL_SIZE} (ATUM_POOL_SIZE, default: concurrency + 4)")
    p.add_argument("--no-schedules", action="store_true", help="do not run periodic jobs here")
    p.set_defaults(func=cmd_worker, needs_db=True, needs_schema=True)
