"""Test helpers that users of atum_ai can reuse: throw-away PostgreSQL clusters and
per-test databases cloned from a migrated template (procrastinate's and River's habit)."""
