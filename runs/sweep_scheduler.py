"""Schedule a sweep's neurons on workers: in this process one after another (--ray off), or on Ray actors.

A Ray worker is an actor that loads the subject model once and runs neurons one after another. A
worker that dies (its process killed, its node lost) is killed for good and replaced, and the neuron
it was running is given to the next free worker, which resumes it from its checkpoint; a neuron that
keeps losing its worker is marked failed after MAX_ATTEMPTS. A neuron is marked done only when its
search reached its budget: one whose worker was stopped mid-search (SIGTERM) goes back to the queue
the same way. A neuron whose search raises is marked failed with the message, and the others go on.
Ctrl-C stops the sweep; `run.py sweep --resume SWEEP_ID` continues it.

A sweep that seeds its searches from the corpus (--seed-corpus, on for the gradient strategy) scans the
layer's corpus once, in this process, before any worker starts: the workers read the scan from the
cache (and the cache's file lock makes a worker that finds no scan wait for one being made, never scan
the same layer beside it). On local Ray each worker runs torch on cores // workers threads, so the
workers do not fight over the cores; --threads sets another count.

Every wait on Ray is bounded: an address where no Ray answers, more workers than the cluster can
place, and a cluster that loses every worker end in a UserError that says what to do. Starting or
reaching Ray (`--ray local` listens on 127.0.0.1 only) is runs/ray_cluster.py.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from neuron_search.context import SearchContext, seeds_from_corpus
from neuron_search.runs.ray_cluster import plain, start_ray
from neuron_search.runs.sweep_worker import SweepWorker, layer_width, run_neuron
from neuron_search.services.dataset.corpus import run_corpus
from neuron_search.services.dataset.exemplars import seed_corpus_scan
from neuron_search.services.errors import UserError
from neuron_search.services.runtime import cpu_count, subject_model, use_threads
from neuron_search.services.storage.run_folder import settings_file
from neuron_search.services.storage.sweep_folder import NeuronStatus, StatusBook, neurons_dir, read_plan

MAX_ATTEMPTS = 3  # workers a neuron may lose (or have stopped under it) before it counts as failed
WORKER_START_TIMEOUT_S = 120.0  # for Ray to place a worker and start its process
KILL_TIMEOUT_S = 30.0  # for Ray to confirm that an unreachable worker it was told to kill is gone



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
        try:
            scan_corpus_first(folder, plan.settings, plan.layer, todo)  # before the live line: the scan shows its own
            show()
            if ray == "off":
                stopped = _in_this_process(folder, plan.settings, plan.layer, todo, book, show)
            else:
                stopped = _on_ray(folder, plan.settings, plan.layer, todo, book, show, ray, workers)
        except KeyboardInterrupt:
            stopped = True
        finally:
            book.interrupted()  # neurons left running (Ctrl-C, or an error that ended the sweep) resume
        show()
        return SweepOutcome(book.all(), stopped)
    finally:
        if display:
            display.close()
        book.close()


def scan_corpus_first(folder: Path, settings: dict, layer: int, todo: list[int]) -> bool:
    """When the sweep's searches seed from the corpus and some neuron of `todo` has not started yet
    (a started one has its seeds), make sure the layer's corpus scan is in the cache, scanning it in this
    process (with --threads if given, else all its cores) before any worker starts. True if a scan was
    needed, whether made here or found cached."""
    seeding = SearchContext(strategy=settings.get("strategy", SearchContext.strategy), seed_corpus=settings.get("seed_corpus"))
    if not seeds_from_corpus(seeding) or all(settings_file(neurons_dir(folder) / str(n)).is_file() for n in todo):
        return False
    use_threads(settings.get("threads", 0))
    subject = subject_model(settings.get("model", SearchContext.model), settings.get("device", SearchContext.device))
    try:
        subject.validate(layer, 0)
    except UserError:  # a layer the model lacks: each neuron's search reports it, as without a scan
        return False
    seed_corpus_scan(subject, layer, source=run_corpus(settings.get("corpus", ""), settings.get("text_column", "")))
    return True


def worker_threads(settings: dict, ray: str, workers: int) -> int:
    """torch threads of each worker: --threads if given; on local Ray the machine's cores // workers,
    so the workers share the cores instead of fighting over them; else 0, torch's default (for a
    worker on a cluster, Ray's: one thread for its one CPU)."""
    if settings.get("threads"):
        return int(settings["threads"])
    if ray == "local":
        return max(1, cpu_count() // max(1, workers))
    return 0


# What one neuron's explanation asks the LLM (services/explain): the explainer once; then, for the
# explanation and for a control sentence each, detection on the held-out prompts (up to 20 high and 20
# low, those the explainer's 20 examples leave, 5 a call) and generation (2 calls); and where the layer's
# scan holds real snippets the explainer did not see, detection on 10 + 10 of them (4 calls a sentence).
_SHOWN, _HELD_OUT, _PER_CALL, _GENERATION_CALLS, _REAL_TEXT_CALLS = 20, 20, 5, 2, 4


def explanation_calls(settings: dict) -> tuple[int, int]:
    """About how many LLM calls one neuron's explanation makes with these sweep settings, without and
    with the detection on real text (from --max-prompts: a small budget holds fewer prompts out)."""
    budget = settings.get("max_prompts", SearchContext.max_prompts) or 2 * _HELD_OUT + _SHOWN
    held = min(_HELD_OUT, max(0, budget - _SHOWN) // 2)
    detection = -(-2 * held // _PER_CALL)
    calls = 1 + 2 * (detection + _GENERATION_CALLS)
    return calls, calls + 2 * _REAL_TEXT_CALLS


def _check_width(neurons: list[int], width: int) -> None:
    outside = [n for n in neurons if n >= width]
    if outside:
        raise UserError(
            f"--neurons names neuron(s) {', '.join(map(str, outside[:5]))} outside the layer, which has {width} "
            f"neurons (0 to {width - 1}). Give a SPEC within that range."
        )


def _resume_command(folder: Path) -> str:
    extra = "" if folder.parent == Path(SearchContext.results_dir) else f" --results-dir {folder.parent}"
    return f"python run.py sweep --resume {folder.name}{extra}"


def _in_this_process(folder: Path, settings: dict, layer: int, todo: list[int], book: StatusBook, show) -> bool:
    if todo:
        _check_width(todo, layer_width(settings, layer))
    for neuron in todo:
        book.started(neuron, os.getpid())
        show()
        try:
            outcome = run_neuron(folder, neuron)
        except UserError as error:
            book.set(neuron, "failed", plain(str(error)))
            continue
        if outcome["stopped"]:
            return True
        if not outcome.get("finished", True):  # ended short of its budget: --resume continues it
            book.set(neuron, "pending", f"its search ended before its budget ({outcome.get('stop_reason') or 'no reason given'})")
            continue
        book.finished(neuron, outcome)
        show()
    return False


def _failure(error: Exception) -> str:
    """One line for a worker's error: a UserError's own message, else the exception's type and message."""
    cause = getattr(error, "cause", None) or error
    if isinstance(cause, UserError):
        return plain(str(cause)).strip()
    lines = [line for line in plain(str(cause)).strip().splitlines() if line.strip()]
    return f"{type(cause).__name__}: {lines[-1] if lines else ''}".rstrip(": ")


def _get(ref: Any, timeout: float | None = None) -> Any:
    """ray.get, with a UserError raised in the worker raised here as itself (not as Ray's RayTaskError,
    whose text is a remote traceback in colour)."""
    import ray
    from ray.exceptions import RayTaskError

    try:
        return ray.get(ref, timeout=timeout)
    except RayTaskError as error:
        if isinstance(error.cause, UserError):
            raise UserError(_failure(error)) from None
        raise RuntimeError(f"A Ray worker failed:\n{plain(str(error))}") from None


def _kill(handle: Any, confirm: bool = False) -> None:
    """Kill a worker for good (no restart). `confirm`: wait (at most KILL_TIMEOUT_S) until Ray reports it
    gone, for a worker that was unreachable rather than dead and may still be running its neuron."""
    import ray

    try:
        ray.kill(handle, no_restart=True)
        if confirm:
            ray.wait([handle.pid.remote()], timeout=KILL_TIMEOUT_S)
    except Exception:  # noqa: BLE001 - already gone, or its node is: nothing left to kill
        pass


def _on_ray(folder: Path, settings: dict, layer: int, todo: list[int], book: StatusBook, show, address: str, workers: int) -> bool:
    import ray
    from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError

    if not sys.stdout.isatty():
        # Ray prints what its workers and raylets report (a worker that died, ...) in colour unless told not to.
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    owned = not ray.is_initialized()
    if owned:
        start_ray(address, workers)
    where = f"at {address!r}" if owned and address != "local" else "this sweep runs on"
    handles: list = []  # every worker this sweep started: all are killed as it ends
    try:
        total = ray.cluster_resources()
        _check_room(total, workers, where)
        gpus = total.get("GPU", 0)
        use_gpu = gpus > 0 and settings.get("device", "auto") in ("auto", "cuda")
        actor = ray.remote(SweepWorker).options(
            num_cpus=1, num_gpus=min(1.0, gpus / workers) if use_gpu else 0, max_restarts=0, max_concurrency=1
        )
        threads = worker_threads(settings, address, workers)
        starting: dict = {}  # a new worker's pid() call -> (the worker, when to give up on it)

        def launch() -> None:
            handle = actor.remote(str(folder.resolve()), threads)
            handles.append(handle)
            starting[handle.pid.remote()] = (handle, time.monotonic() + WORKER_START_TIMEOUT_S)

        def started(ref) -> tuple | None:
            """The worker whose pid() call `ref` answered, with its pid; None (and killed) if it could not start."""
            handle, _ = starting.pop(ref)
            try:
                return handle, ray.get(ref)
            except (RayActorError, RayTaskError) as error:
                _kill(handle)
                failures.append(_failure(error))
                return None

        count = min(workers, len(todo))
        if not count:
            return False
        failures: list[str] = []
        for _ in range(count):
            launch()
        ready, late = ray.wait(list(starting), num_returns=count, timeout=WORKER_START_TIMEOUT_S)
        idle = [w for w in (started(ref) for ref in ready) if w]
        if len(idle) < count:
            free = ray.available_resources().get("CPU", 0)
            for ref in late:
                _kill(starting.pop(ref)[0])
            raise UserError(_cannot_place(len(idle), count, free, total, where, failures, folder))
        _check_width(todo, _get(idle[0][0].layer_width.remote(settings, layer)))
        pending, running, lost = deque(todo), {}, {}

        def again(neuron: int, why: str) -> None:
            """Back to the queue, to resume from its checkpoint; failed once it has done so MAX_ATTEMPTS times."""
            lost[neuron] = lost.get(neuron, 0) + 1
            if lost[neuron] < MAX_ATTEMPTS:
                book.set(neuron, "pending", f"{why}; it resumes from its checkpoint")
                pending.appendleft(neuron)
            else:
                book.set(neuron, "failed", f"{why}, {MAX_ATTEMPTS} times; `--resume` tries it again")

        while pending or running:
            while pending and idle:
                neuron, worker = pending.popleft(), idle.pop()
                book.started(neuron, worker[1])
                running[worker[0].run.remote(neuron)] = (neuron, worker)
                show()
            if not running and not starting:
                free = ray.available_resources().get("CPU", 0)
                raise UserError(
                    f"Ray lost every worker of sweep {folder.name} and could not start a new one within "
                    f"{WORKER_START_TIMEOUT_S:g} s (a lost node, or no free CPU: {free:g} of the cluster's "
                    f"{total.get('CPU', 0):g}). The neurons done are kept and the others resume from their "
                    f"checkpoints: run `{_resume_command(folder)}` once the cluster has room again, or with --ray off."
                )
            ready, _ = ray.wait([*running, *starting], num_returns=1, timeout=2.0)
            for ref in ready:
                if ref in starting:
                    worker = started(ref)
                    if worker:
                        idle.append(worker)
                    continue
                neuron, worker = running.pop(ref)
                try:
                    outcome = ray.get(ref)
                except RayActorError as error:
                    # Dead, or unreachable (its node may be cut off while it still runs): killed first, so no
                    # two workers ever run one neuron, then replaced.
                    unreachable = isinstance(error, ActorUnavailableError)
                    _kill(worker[0], confirm=unreachable)
                    again(neuron, "its worker became unreachable" if unreachable else "its worker died")
                    launch()
                except RayTaskError as error:
                    book.set(neuron, "failed", _failure(error))
                    idle.append(worker)
                else:
                    if outcome.get("finished", not outcome.get("stopped")):
                        book.finished(neuron, outcome)
                        idle.append(worker)
                    else:
                        # Stopped before its budget (SIGTERM to its worker): not done. The worker was told to
                        # end, so it is, and a new one takes its place.
                        _kill(worker[0])
                        measured = outcome.get("measured", 0)
                        again(neuron, f"its worker was stopped (SIGTERM) after {measured} measured prompts, before its budget")
                        launch()
                show()
            now = time.monotonic()
            for ref in [r for r, (_, deadline) in starting.items() if deadline < now]:
                _kill(starting.pop(ref)[0])  # a replacement Ray cannot place: the sweep goes on with fewer
        return False
    finally:
        for handle in handles:
            _kill(handle)
        if owned:
            ray.shutdown()


def _check_room(total: dict, workers: int, where: str) -> None:
    cpus = total.get("CPU", 0)
    if workers > cpus:
        fewer = f"Give --workers {int(cpus)} or fewer" if cpus >= 1 else "Use --ray local or --ray off"
        raise UserError(
            f"--workers {workers} asks Ray for {workers} CPUs (one a worker), but the cluster {where} has "
            f"{cpus:g}. {fewer}, or add nodes to the cluster (`ray start --address HEAD:6379` on each)."
        )


def _cannot_place(started: int, count: int, free: float, total: dict, where: str, failures: list[str], folder: Path) -> str:
    why = (
        f"a worker failed as it started ({failures[0]}): install this project on every node"
        if failures
        else f"the cluster {where} has {free:g} of its {total.get('CPU', 0):g} CPUs free (other jobs hold the rest)"
    )
    fewer = f"give --workers {started} or fewer" if started else "give fewer --workers"
    return (
        f"Ray started {started} of the {count} workers asked for within {WORKER_START_TIMEOUT_S:g} s: {why}. "
        f"Free the cluster or {fewer}, then run `{_resume_command(folder)}`; nothing of the sweep is lost."
    )
