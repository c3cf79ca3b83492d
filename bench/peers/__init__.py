"""The systems under test behind one small interface (see ``System``)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from bench.common import PY, Proc, atum_env, spawn


@dataclass
class System:
    name: str
    module: ModuleType
    version: str

    async def setup(self, url: str) -> None:
        await self.module.setup(url)

    async def reset(self, url: str) -> None:
        await self.module.reset(url)

    def start_worker(self, url: str, concurrency: int, *, serve: bool = False, tag: str = "") -> Proc:
        name = f"{self.name}_c{concurrency}{'_serve' if serve else ''}{tag}"
        if self.name == "atum_ai":
            proc = spawn(self.module.worker_cmd(concurrency, serve), self.module.worker_env(url), name)
            proc.out = None  # type: ignore[attr-defined]
            return proc
        fd, out = tempfile.mkstemp(prefix=f"{name}_", suffix=".json")
        os.close(fd)
        cmd = [PY, "-m", f"bench.peers.{self.module.__name__.rsplit('.', 1)[-1]}",
               "--url", url, "--concurrency", str(concurrency), "--out", out]
        if serve:
            cmd.append("--serve")
        proc = spawn(cmd, atum_env(url), name)
        proc.out = out  # type: ignore[attr-defined]
        return proc

    async def starts(self, url: str, procs: Sequence[Proc]) -> dict[Any, float]:
        if self.name == "atum_ai":
            return await self.module.starts(url)
        found: dict[Any, float] = {}
        for p in procs:
            out = p.out  # type: ignore[attr-defined]
            with open(out) as fh:
                for job_id, at in json.load(fh):
                    found[job_id] = at
            os.unlink(out)
        return found


def _version(dist: str) -> str:
    from importlib.metadata import version

    try:
        return version(dist)
    except Exception:
        return "?"


def load(names: Sequence[str]) -> list[System]:
    loaders: dict[str, Callable[[], System]] = {
        "atum_ai": lambda: System("atum_ai", __import__("bench.peers.atum_peer", fromlist=["x"]),
                                  _version("atum-ai")),
        "procrastinate": lambda: System(
            "procrastinate", __import__("bench.peers.procrastinate_peer", fromlist=["x"]),
            _version("procrastinate")),
        "pgqueuer": lambda: System("pgqueuer", __import__("bench.peers.pgqueuer_peer", fromlist=["x"]),
                                   _version("pgqueuer")),
    }
    out = []
    for n in names:
        try:
            out.append(loaders[n]())
        except ImportError as exc:  # a peer that is not installed is reported, not fatal
            print(f"[bench] skipping {n}: {exc} (pip install -e '.[bench]')")
    return out
