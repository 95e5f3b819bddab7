"""Schedule a sweep's neurons on workers: in this process one after another (--ray off), or on Ray actors.

A Ray worker is an actor that loads the subject model once and runs neurons one after another. A
worker that dies (its process killed, its node lost) is replaced, and the neuron it was running is
given to the next free worker, which resumes it from its checkpoint; a neuron that keeps losing its
worker is marked failed after MAX_ATTEMPTS. A neuron whose search raises is marked failed with the
message, and the others go on. Ctrl-C stops the sweep; `run.py sweep --resume SWEEP_ID` continues it.
"""

from __future__ import annotations

import os
import tempfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from services.errors import UserError
from services.sweep.sweep_folder import NeuronStatus, StatusBook, read_plan
from services.sweep.worker import SweepWorker, layer_width, run_neuron

MAX_ATTEMPTS = 3  # workers a neuron may lose before it counts as failed


class SweepDisplay(Protocol):
    def update(self, statuses: list[NeuronStatus]) -> None: ...

    def close(self) -> None: ...


@dataclass
class SweepOutcome:
    statuses: list[NeuronStatus]
    stopped: bool  # Ctrl-C: some neurons are left for --resume


def run_sweep(folder: Path, ray: str = "local", workers: int = 2, display: SweepDisplay | None = None) -> SweepOutcome:
    """Run every neuron of the sweep in `folder` that is not done yet."""
    if workers < 1:
        raise UserError("--workers must be at least 1.")
    book = StatusBook(folder)
    try:
        plan = read_plan(folder)
        book.add(plan.neurons)
        book.interrupted()
        todo = [s.neuron for s in book.all() if s.status != "done"]
        show = (lambda: display.update(book.all())) if display else (lambda: None)
        show()
        try:
            if ray == "off":
                stopped = _in_this_process(folder, plan.settings, plan.layer, todo, book, show)
            else:
                stopped = _on_ray(folder, plan.settings, plan.layer, todo, book, show, ray, workers)
        except KeyboardInterrupt:
            stopped = True
        if stopped:
            book.interrupted()
        show()
        return SweepOutcome(book.all(), stopped)
    finally:
        if display:
            display.close()
        book.close()


def _check_width(neurons: list[int], width: int) -> None:
    outside = [n for n in neurons if n >= width]
    if outside:
        raise UserError(
            f"--neurons names neuron(s) {', '.join(map(str, outside[:5]))} outside the layer, which has {width} "
            f"neurons (0 to {width - 1}). Give a SPEC within that range."
        )


def _in_this_process(folder: Path, settings: dict, layer: int, todo: list[int], book: StatusBook, show) -> bool:
    if todo:
        _check_width(todo, layer_width(settings, layer))
    for neuron in todo:
        book.started(neuron, os.getpid())
        show()
        try:
            outcome = run_neuron(folder, neuron)
        except UserError as error:
            book.set(neuron, "failed", str(error))
            continue
        if outcome["stopped"]:
            return True
        book.finished(neuron, outcome)
        show()
    return False


def _on_ray(folder: Path, settings: dict, layer: int, todo: list[int], book: StatusBook, show, address: str, workers: int) -> bool:
    import ray
    from ray.exceptions import RayActorError, RayTaskError

    owned = not ray.is_initialized()
    if owned:
        _start_ray(address, workers)
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        use_gpu = gpus > 0 and settings.get("device", "auto") in ("auto", "cuda")
        actor = ray.remote(SweepWorker).options(
            num_cpus=1, num_gpus=min(1.0, gpus / workers) if use_gpu else 0, max_restarts=0, max_concurrency=1
        )

        def new_worker():
            handle = actor.remote(str(folder.resolve()))
            return handle, ray.get(handle.pid.remote())

        idle = [new_worker() for _ in range(min(workers, len(todo)))]
        if not idle:
            return False
        _check_width(todo, ray.get(idle[0][0].layer_width.remote(settings, layer)))
        pending, running, lost = deque(todo), {}, {}
        while pending or running:
            while pending and idle:
                neuron, worker = pending.popleft(), idle.pop()
                book.started(neuron, worker[1])
                running[worker[0].run.remote(neuron)] = (neuron, worker)
                show()
            ready, _ = ray.wait(list(running), num_returns=1, timeout=2.0)
            for future in ready:
                neuron, worker = running.pop(future)
                try:
                    book.finished(neuron, ray.get(future))
                    idle.append(worker)
                except RayActorError:
                    lost[neuron] = lost.get(neuron, 0) + 1
                    if lost[neuron] < MAX_ATTEMPTS:
                        book.set(neuron, "pending", "its worker died; resumed from its checkpoint")
                        pending.appendleft(neuron)
                    else:
                        book.set(neuron, "failed", f"lost {MAX_ATTEMPTS} workers")
                    idle.append(new_worker())
                except RayTaskError as error:
                    cause = error.cause
                    message = str(cause) if isinstance(cause, UserError) else f"{type(cause).__name__}: {cause}"
                    book.set(neuron, "failed", message)
                    idle.append(worker)
                show()
        return False
    finally:
        if owned:
            ray.shutdown()


def _ray_temp_dir() -> str:
    """Ray's session folder: under the temporary folder, unless that path is so long that Ray's
    socket paths would pass the 107 bytes a Unix socket's name may have (then /tmp/ray)."""
    base = Path(tempfile.gettempdir()) / "ray"
    return str(base if len(str(base)) <= 40 else Path("/tmp/ray"))


def _start_ray(address: str, workers: int) -> None:
    import ray

    try:
        if address == "local":
            # One CPU per worker: each actor's torch then runs on one core (Ray sets OMP_NUM_THREADS).
            ray.init(
                num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level="ERROR", _temp_dir=_ray_temp_dir()
            )
        else:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise UserError(
            f"Cannot start or reach Ray at {address!r} ({error}). Use --ray local for a Ray instance on this machine, "
            "--ray ADDRESS (e.g. ray://head:10001 or auto) for a running cluster, or --ray off for no Ray."
        ) from None
