"""Which Ray a sweep runs on: the cluster the user named, else a private local Ray on loopback.

Plain `ray.init()` joins whatever `/tmp/ray/ray_current_cluster` names, and /tmp/ray is
world-writable: a stale cluster (a test killed at its timeout) made sweeps hang for minutes on
"Failed to connect to GCS", and a planted one would receive the trainable and its data. So:
- no `--address` and no RAY_ADDRESS: always start our own Ray (`address="local"`, which never reads
  that file), with every Ray server bound to 127.0.0.1 (Ray's own single-machine mode);
- an address: probe it, then join, both within TUNER_RAY_CONNECT_TIMEOUT seconds (default 30);
  a cluster that does not answer is one line (exit 2) before any file or MLflow run is written.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from trainables.errors import TunerError
from tuner import recover

# Read by ray._private.ray_constants at import: Ray then resolves this node's IP to 127.0.0.1 and its
# gRPC servers listen on loopback only. Only for the local case; set again in start() either way.
_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
DEFAULT_CONNECT_TIMEOUT_S = 30.0


def requested_address(address: str | None) -> str | None:
    """The cluster the user asked for (--address, else RAY_ADDRESS), or None for a private one."""
    return address or os.environ.get("RAY_ADDRESS") or None


def connect_timeout() -> float:
    raw = os.environ.get("TUNER_RAY_CONNECT_TIMEOUT", "")
    try:
        value = float(raw) if raw else DEFAULT_CONNECT_TIMEOUT_S
    except ValueError:
        raise TunerError(f"TUNER_RAY_CONNECT_TIMEOUT={raw[:40]!r}: expected seconds, e.g. 30") from None
    if not 0 < value <= 3600:
        raise TunerError(f"TUNER_RAY_CONNECT_TIMEOUT={raw[:40]!r}: expected seconds in (0, 3600]")
    return value


def _loopback_only(on: bool) -> None:
    """Ray's single-machine mode (node IP 127.0.0.1) for a private Ray; the normal mode to join one."""
    from tuner import raycompat

    os.environ[_LOOPBACK_ENV] = "0" if on else "1"  # inherited by the raylet and the workers
    raycompat.set_cluster_mode(not on)


def _host_port(address: str) -> tuple[str, int]:
    """HOST:PORT of an address Ray accepts: HOST:PORT, ray://HOST:PORT or auto."""
    target = address
    if address == "auto":
        from tuner import raycompat

        target = raycompat.read_ray_address()
        if not target:
            raise TunerError("--address auto: no running Ray cluster found on this machine (start one "
                             "with `ray start --head`, or leave out --address for a private local Ray)")
    target = target.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise TunerError(f"--address {address[:80]}: expected auto, HOST:PORT or ray://HOST:PORT")
    return host.strip("[]"), int(port)


def _probe(address: str, timeout: float) -> None:
    host, port = _host_port(address)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        reason = "no answer" if isinstance(e, socket.timeout) else (e.strerror or type(e).__name__)
        raise TunerError(f"--address {address[:80]}: no Ray cluster answers at {host}:{port} "
                         f"({reason} within {timeout:g}s; TUNER_RAY_CONNECT_TIMEOUT sets the limit)") from None


class Unanswered(TunerError):
    """Ray is still blocked joining a cluster on another thread: the CLI prints this line and ends the
    process at once (nothing is written yet; a normal exit would wait on Ray and log its retries)."""

    exit_now = True


def _init_within(timeout: float, address: str, **kwargs: Any) -> None:
    """ray.init(address=...) that gives up after `timeout` s (Ray itself retries for minutes)."""
    import ray

    done, failure = threading.Event(), []

    def join() -> None:
        try:
            ray.init(address=address, **kwargs)
        except BaseException as e:  # noqa: BLE001 - reported on the caller's thread
            failure.append(e)
        finally:
            done.set()

    worker_log = logging.getLogger("ray._private.worker")  # "SIGTERM handler is not set ... not the main thread"
    level = worker_log.level
    worker_log.setLevel(logging.ERROR)
    try:
        threading.Thread(target=join, name="tuner-ray-join", daemon=True).start()
        answered = done.wait(timeout)
    finally:
        worker_log.setLevel(level)
    if not answered:
        raise Unanswered(f"--address {address[:80]}: the Ray cluster did not accept us within {timeout:g}s "
                         "(TUNER_RAY_CONNECT_TIMEOUT sets the limit)")
    if failure:
        first = (str(failure[0]).strip().splitlines() or [type(failure[0]).__name__])[0]
        raise TunerError(f"--address {address[:80]}: cannot join the Ray cluster: {first[:160]}")


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """glibc gives each thread that allocates its own malloc arena (up to 8 per core), and memory
    freed in one rarely returns to the system: Ray's driver threads made a long sweep's resident
    memory grow about 0.23 MB per trial against 0.12 MB with 2 arenas (benchmarks/load.py, 300
    trials). Set before Ray's threads start; MALLOC_ARENA_MAX in the environment wins."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-8, arenas))  # M_ARENA_MAX = -8 in malloc.h; 1 = success
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        return False


def start(address: str | None, verbose: int = 1, **local: Any) -> None:
    """Start a private local Ray (`local`: ray.init options such as num_cpus), or join the cluster
    the user named (bounded in time)."""
    import ray

    from tuner import progress

    # before ray.init (its token line) and any sweep's MLflow store; the benchmarks start Ray first
    progress.quiet_libraries()
    if ray.is_initialized():
        return
    limit_malloc_arenas()
    kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=verbose >= 2,
                                  configure_logging=True, logging_level=logging.WARNING)
    address = requested_address(address)
    with recover.keeping_sigterm():
        if address is None:
            _loopback_only(True)
            ray.init(address="local", **{**kwargs, **local})
            return
        _loopback_only(False)
        timeout = connect_timeout()
        _probe(address, timeout)  # a dead address fails here at once, not after Ray's minutes of retries
        _init_within(timeout, address, **kwargs)


def largest_node() -> tuple[float, float]:
    """(CPUs, GPUs) of the largest live node: a trial's bundle must fit on one node."""
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    return (max((n.get("CPU", 0.0) for n in nodes), default=0.0),
            max((n.get("GPU", 0.0) for n in nodes), default=0.0))
