"""Where trials run: in this process (the default, nothing to install) or as Ray tasks on a local Ray
instance or a cluster. Both take the same `TrialSpec`s and give back the same `TrialResult`s; only the driver
touches the store, so results and store semantics are the same.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from slimkit.errors import SlimkitError
from slimkit.searching.trial import TrialResult, TrialSpec, run_trial
from slimkit.searching.world import World, WorldSpec

EXECUTORS = ("local", "ray")


class LocalExecutor:
    """Runs each trial in this process as soon as it is submitted (one at a time)."""

    name = "local"

    def __init__(self) -> None:
        self.world: World | None = None
        self._done: list[tuple[int, TrialResult]] = []

    def start(self, world: World, spec: WorldSpec) -> None:
        self.world = world

    def has_capacity(self) -> bool:
        return not self._done

    def submit(self, spec: TrialSpec, stop_early: Callable[[int, float], bool], out_dir: Path) -> None:
        assert self.world is not None
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        self._done.append((spec.number, run_trial(self.world, spec, out_dir=out_dir, stop_early=stop_early)))

    def wait(self) -> list[tuple[int, TrialResult]]:
        done, self._done = self._done, []
        return done

    def close(self) -> None:
        pass


def _remote_trial(world_spec: WorldSpec, key: str, spec: TrialSpec) -> TrialResult:
    """A Ray task: build the world once per worker process, run one trial, return its record and artifact."""
    from slimkit.searching.world import build_world

    world = build_world(world_spec, cache_key=key)
    return run_trial(world, spec, out_dir=None, stop_early=lambda step, value: not world.floor.met(value))


class RayExecutor:
    """Runs trials as Ray tasks, `workers` at a time, each with `threads` CPUs reserved (Ray sets the task's
    OMP threads to them, and slimkit's runners use `threads`), so one trial's latency is not measured while
    another shares its cores."""

    name = "ray"

    def __init__(self, address: str | None, workers: int, threads: int) -> None:
        try:
            import ray
        except ImportError as exc:
            raise SlimkitError("--executor ray needs Ray", "pip install 'slimkit[ray]'") from exc
        self.ray = ray
        self.workers, self.threads = workers, threads
        _check_reachable(address)
        try:
            if address is None:  # a local instance sized for the workers
                ray.init(num_cpus=workers * threads, include_dashboard=False, log_to_driver=False,
                         configure_logging=False, ignore_reinit_error=True)
            else:
                ray.init(address=address, log_to_driver=False, configure_logging=False, ignore_reinit_error=True)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise SlimkitError(f"cannot connect to the Ray cluster at {address}: {str(exc).splitlines()[0]}",
                               "start it (ray start --head) or fix --address; nothing was started") from None
        self._task = ray.remote(num_cpus=threads, max_retries=0)(_remote_trial)
        self._pending: dict[Any, int] = {}
        self._world_ref = None
        self._key = ""

    def start(self, world: World, spec: WorldSpec) -> None:
        import uuid

        self._world_ref = self.ray.put(spec)
        self._key = uuid.uuid4().hex

    def has_capacity(self) -> bool:
        return len(self._pending) < self.workers

    def submit(self, spec: TrialSpec, stop_early: Callable[[int, float], bool], out_dir: Path) -> None:
        ref = self._task.remote(self._world_ref, self._key, spec)
        self._pending[ref] = spec.number

    def wait(self) -> list[tuple[int, TrialResult]]:
        if not self._pending:
            return []
        ready, _ = self.ray.wait(list(self._pending), num_returns=1)
        out = []
        for ref in ready:
            number = self._pending.pop(ref)
            try:
                out.append((number, self.ray.get(ref)))
            except Exception as exc:  # the task's process died (out of memory, a crash in a native library)
                out.append((number, TrialResult(number, "failed", 0.0, error=f"Ray task failed: "
                                                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")))
        return out

    def close(self) -> None:
        for ref in list(self._pending):
            self.ray.cancel(ref, force=True)
        self._pending.clear()
        self.ray.shutdown()


def _check_reachable(address: str | None) -> None:
    """A ray://host:port that does not answer is refused at once (Ray's own client retries for minutes)."""
    if not address or not address.startswith("ray://"):
        return
    parsed = urlparse(address)
    if not parsed.hostname:
        raise SlimkitError(f"--address {address} names no host", "give ray://HOST:PORT (default port 10001)")
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 10001), timeout=3):
            pass
    except OSError as exc:
        raise SlimkitError(f"the Ray cluster at {address} cannot be reached ({exc.strerror or exc})",
                           "check that its head runs `ray start --head` with the client server, and the "
                           "address; nothing was started") from None


def make_executor(name: str, *, address: str | None, workers: int, threads: int):
    if name == "local":
        if address is not None:
            raise SlimkitError("--address is for --executor ray", "add --executor ray, or drop --address")
        return LocalExecutor()
    if name == "ray":
        if not isinstance(workers, int) or workers < 1:
            raise SlimkitError(f"--workers {workers} runs no trial", "give 1 or more")
        return RayExecutor(address, workers, threads)
    raise SlimkitError(f"--executor {name} is not one of {', '.join(EXECUTORS)}", "e.g. --executor ray")
