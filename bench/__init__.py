"""Benchmarks: `python -m bench` (queue suites side by side with Procrastinate and pgqueuer,
pgbench as the hardware reference, and the AI suites). See bench/__main__.py."""
