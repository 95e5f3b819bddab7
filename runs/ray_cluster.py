"""Ray for a sweep: start it on this machine (listening on loopback only) or reach a running cluster,
with every wait bounded and every failure a UserError that says what to do.

`start_ray("local", workers)` starts Ray for this process alone on 127.0.0.1; `start_ray(ADDRESS, ...)`
first checks, within seconds, that a Ray cluster answers there (`_probe`), since ray.init waits for an
absent one for many minutes.
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from neuron_search.services.errors import UserError

CONNECT_TIMEOUT_S = 10.0  # to open a connection to a Ray address, and again for its first answer

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
# An HTTP/2 client's first bytes and an empty SETTINGS frame: a gRPC server (Ray's GCS, Ray Client's
# server) answers with a SETTINGS frame of its own.
_HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def plain(text: str) -> str:
    """`text` without terminal colour codes (Ray colours its remote tracebacks)."""
    return _ANSI.sub("", text)


def _ray_temp_dir() -> str:
    """Ray's session folder: under the temporary folder, unless that path is so long that Ray's
    socket paths would pass the 107 bytes a Unix socket's name may have (then /tmp/ray)."""
    base = Path(tempfile.gettempdir()) / "ray"
    return str(base if len(str(base)) <= 40 else Path("/tmp/ray"))


@contextmanager
def _loopback_only() -> Iterator[None]:
    """Ray started in this block takes 127.0.0.1 as its node's address, so its GCS, raylet, agents and
    workers listen on loopback only. Ray does so on macOS and Windows; on Linux it takes the machine's
    network address and listens on every interface, without authentication."""
    from ray._private import ray_constants

    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


def _is_loopback(ip: str) -> bool:
    import ipaddress

    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback


def start_ray(address: str, workers: int) -> None:
    import ray

    if address == "local":
        try:
            with _loopback_only():
                # One CPU per worker (Ray sets OMP_NUM_THREADS=1 in each actor); a worker then sets its
                # torch threads to cores // workers (worker_threads).
                ray.init(
                    address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False,
                    logging_level="ERROR", _temp_dir=_ray_temp_dir(),
                )  # fmt: skip
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise UserError(
                f"Cannot start Ray on this machine ({plain(str(error)).strip()}). Use --ray off to run the neurons "
                "one after another in this process, or --ray ADDRESS for a running cluster."
            ) from None
        node = ray.util.get_node_ip_address()
        if not _is_loopback(node):
            ray.shutdown()
            raise UserError(
                f"Ray on this machine would listen at {node}, beyond this machine, with no authentication "
                "(this Ray version ignores the setting that keeps it on 127.0.0.1). Use --ray off, or start a "
                "cluster you secure yourself (`ray start --head`) and give --ray ADDRESS."
            )
        return
    _probe(address)
    try:
        ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise UserError(
            f"Cannot reach Ray at {address!r} ({plain(str(error)).strip()}). Use --ray local for a Ray instance "
            "on this machine, --ray ADDRESS (e.g. ray://head:10001 or auto) for a running cluster, or --ray off for no Ray."
        ) from None


def _probe(address: str) -> None:
    """Make sure a Ray cluster answers at `address` within seconds, before ray.init, which waits for an
    absent one for many minutes: a connection, then a gRPC server's first answer."""
    target = address.removeprefix("ray://")
    if target == "auto":
        try:
            from ray._private.services import canonicalize_bootstrap_address

            target = canonicalize_bootstrap_address("auto") or ""
        except ConnectionError:
            target = ""
        except Exception:  # noqa: BLE001 - Ray could not tell: ray.init says why, at once
            return
        if not target:
            raise UserError(
                "--ray auto finds no running Ray cluster: none was started with `ray start` on this machine, and "
                "RAY_ADDRESS is not set. Start one (`ray start --head`), give --ray HOST:PORT, or use --ray local "
                "for Ray on this machine or --ray off for no Ray."
            )
    host, colon, port = target.rpartition(":")
    host = host.strip("[]")
    if not colon or not host or not port.isdigit():
        raise UserError(
            f"--ray {address!r} is not an address Ray takes: give HOST:PORT (the head node's, e.g. head:6379), "
            "ray://HOST:PORT for Ray Client (e.g. ray://head:10001), auto, local (Ray on this machine) or off (no Ray)."
        )
    what_to_do = (
        "Start the cluster there (`ray start --head` prints its address) or give the address it printed; "
        "--ray local runs Ray on this machine, --ray off runs without Ray."
    )
    try:
        connection = socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S)
    except OSError as error:
        if isinstance(error, TimeoutError):
            reason = f"no answer within {CONNECT_TIMEOUT_S:g} s"
        else:
            reason = (getattr(error, "strerror", None) or str(error)).lower()
        raise UserError(
            f"Cannot reach Ray at {address!r}: nothing takes connections at {host}:{port} ({reason}). {what_to_do}"
        ) from None
    with connection:
        if os.environ.get("RAY_USE_TLS", "0").lower() not in ("0", "false", ""):
            return  # a TLS handshake comes first: the connection is all there is to check
        try:
            connection.settimeout(CONNECT_TIMEOUT_S)
            connection.sendall(_HTTP2_HELLO)
            answer = connection.recv(9)
        except OSError:
            answer = b""
    if len(answer) < 4 or answer[3] != 0x04:
        raise UserError(
            f"Cannot reach Ray at {address!r}: {host}:{port} takes connections but is not a Ray cluster (it did "
            f"not answer as Ray's gRPC server within {CONNECT_TIMEOUT_S:g} s). {what_to_do}"
        )
