"""Sweeps on Ray, issue #32: a neuron stopped before its budget is not done, `--ray local` listens on
loopback only, every wait on Ray ends with a clear message, and a worker's error reaches the user as the
one paragraph the CLI prints.

One local Ray instance (started as `--ray local` starts it) serves the tests that need Ray; the
unreachable address is tried in a process of its own, with no Ray running there."""

from __future__ import annotations

import ipaddress
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from neuron_search import run
from neuron_search.services.errors import UserError
from neuron_search.runs import ray_cluster, sweep_scheduler as scheduler
from neuron_search.services.storage.sweep_folder import SweepPlan, sweep_dir, write_plan
from test_sweep import NEURONS, records, signal_a_worker_mid_neuron, statuses, sweep_args

ROOT = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[")
BUDGET = 30  # iterations a neuron of the SIGTERM test runs: a few seconds, time to stop its worker mid-search


@pytest.fixture(scope="module")
def local_ray():
    """Ray as `--ray local` starts it, with two CPUs: the sweeps below join it instead of starting their own."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray_cluster.start_ray("local", 2)
    yield ray
    ray.shutdown()


def test_an_unreachable_ray_address_is_a_clear_error_within_30_seconds(tiny_model_dir, tmp_path):
    command = [sys.executable, str(ROOT / "run.py"), *sweep_args(tiny_model_dir, tmp_path, "nowhere", "--ray", "127.0.0.1:1")]
    started = time.monotonic()
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("run.py sweep --ray 127.0.0.1:1 still waited after 60 s")
    seconds = time.monotonic() - started
    out = " ".join(done.stdout.split())
    assert done.returncode == 2, done.stdout + done.stderr
    assert seconds < 30, f"took {seconds:.0f} s"
    assert "Error: Cannot reach Ray at '127.0.0.1:1'" in out, out
    assert "--ray local" in out and "--ray off" in out  # says what to do
    assert "Traceback" not in done.stdout + done.stderr


def test_local_ray_listens_on_loopback_only(local_ray):
    from neuron_search.runs.sweep_worker import SweepWorker

    worker = local_ray.remote(SweepWorker).options(num_cpus=1).remote(str(ROOT))
    worker_pid = local_ray.get(worker.pid.remote(), timeout=120)  # a worker process, listening as workers do
    ours = [psutil.Process(), *psutil.Process().children(recursive=True)]  # this driver, GCS, raylet, agents, workers
    assert worker_pid in {p.pid for p in ours}
    sockets, names = [], set()
    for process in ours:
        try:
            connections = process.net_connections(kind="inet")
            name = process.name()
        except psutil.NoSuchProcess:
            continue
        for c in connections:
            if c.status == psutil.CONN_LISTEN or (c.type == socket.SOCK_DGRAM and not c.raddr):  # TCP listening, or UDP bound
                sockets.append((name, process.pid, c.laddr.ip, c.laddr.port))
                names.add(name)
    assert {"gcs_server", "raylet"} <= names, sockets  # Ray's own servers were seen ...
    assert worker_pid in {pid for _, pid, _, _ in sockets}, sockets

    def loopback(ip: str) -> bool:
        address = ipaddress.ip_address(ip)
        mapped = getattr(address, "ipv4_mapped", None)
        return (mapped or address).is_loopback

    assert [s for s in sockets if not loopback(s[2])] == []  # ... and none listens beyond this machine
    local_ray.kill(worker)


def test_a_user_error_in_a_worker_is_its_one_paragraph(local_ray, tiny_model_dir, tmp_path):
    folder = sweep_dir(tmp_path, "bad-layer")
    settings = {"model": str(tiny_model_dir), "device": "cpu", "strategy": "gradient", "seed_prompts": []}
    write_plan(folder, SweepPlan(sweep_id="bad-layer", layer=5, neurons=[0], settings=settings, shared=False))
    with pytest.raises(UserError) as caught:
        scheduler.run_sweep(folder, "local", workers=1)  # the worker loads the model and finds no layer 5
    message = str(caught.value)
    assert type(caught.value) is UserError  # not Ray's RayTaskError(UserError), whose text is a remote traceback
    assert message.startswith("Layer 5 does not exist") and "\n" not in message, message
    assert not ANSI.search(message) and "ray::" not in message and "File " not in message
    assert {s.status for s in statuses(folder).values()} == {"pending"}


def test_more_workers_than_the_cluster_can_place_is_a_clear_error(local_ray, tiny_model_dir, tmp_path):
    outcome: dict = {}

    def sweep() -> None:
        try:
            outcome["code"] = run.main(sweep_args(tiny_model_dir, tmp_path, "crowded", "--ray", "local", "--workers", "3"))
        except BaseException as error:  # noqa: BLE001 - reported below
            outcome["error"] = error

    thread = threading.Thread(target=sweep, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "a sweep asking for 3 workers of a 2-CPU Ray still waited after 60 s"
    assert outcome.get("code") == 2, outcome


def test_a_worker_stopped_by_sigterm_leaves_its_neuron_to_finish(local_ray, tiny_model_dir, tmp_path):
    """SIGTERM to a worker mid-neuron: the search stops after its batch in flight, and that neuron is not
    recorded done; the sweep (or its --resume) finishes it, to its whole budget."""
    folder = sweep_dir(tmp_path, "sigterm")
    seen: dict = {}

    stopper = threading.Thread(target=signal_a_worker_mid_neuron, args=(folder, signal.SIGTERM, seen))
    stopper.start()
    code = run.main(sweep_args(tiny_model_dir, tmp_path, "sigterm", "--ray", "local", "--workers", "2", iterations=BUDGET))
    stopper.join()
    assert code == 0 and "pid" in seen, "no worker was stopped mid-neuron"

    def last_iteration(neuron: int) -> int:
        return max(i for i, *_ in records(folder / "neurons" / str(neuron)))

    last = BUDGET - 1  # a search that ran its budget saved iterations 0 (its seeds) to BUDGET - 1
    for n, s in statuses(folder).items():  # done means its whole budget, never 4 of 400 iterations
        if s.status == "done":
            assert last_iteration(n) == last, (n, s)
    assert run.main(["sweep", "--resume", "sigterm", "--results-dir", str(tmp_path), "--ray", "local", "--quiet"]) == 0
    final = statuses(folder)
    assert {s.status for s in final.values()} == {"done"}, final
    assert {last_iteration(n) for n in NEURONS} == {last}  # the stopped neuron too
    assert final[seen["neuron"]].attempts >= 2  # started again after the stop
