"""What a test session must not leave behind: processes it started (Ray's raylet, gcs_server and
workers, `mlflow ui`, CLI subprocesses) and Ray's /tmp/ray/ray_current_cluster file.

Processes are recognised by a token in their environment, which every child inherits (Ray's daemons
too, even after they are re-parented to init), so other users' and other sessions' Ray is ignored.
"""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid

TOKEN_VAR = "TUNER_TEST_SESSION"
ADDRESS_FILE = "/tmp/ray/ray_current_cluster"


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def _answers(address: bytes) -> bool:
    """Whether something accepts a TCP connection at the HOST:PORT in `address`."""
    host, _, port = address.decode(errors="replace").strip().rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except (OSError, ValueError):
        return False


def ours(token: str) -> dict[int, str]:
    """pid -> command line of every live process that carries `token` (this process excluded)."""
    needle = f"{TOKEN_VAR}={token}".encode()
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        env = _read(f"/proc/{name}/environ")
        stat = _read(f"/proc/{name}/stat") or b""
        if env and needle in env.split(b"\0") and b") Z " not in stat:  # zombies are already gone
            cmd = (_read(f"/proc/{name}/cmdline") or b"").replace(b"\0", b" ").decode(errors="replace")
            found[int(name)] = cmd.strip()[:120]
    return found


def snapshot() -> dict:
    """Mark this session (children inherit the token) and note the address file as it is now."""
    token = os.environ.setdefault(TOKEN_VAR, uuid.uuid4().hex)
    return {"token": token, "address_file": _read(ADDRESS_FILE)}


def left_behind(before: dict, grace_s: float = 30.0) -> list[str]:
    """What is still there after `grace_s` for processes to exit; kills what it reports."""
    deadline = time.monotonic() + grace_s
    procs = ours(before["token"])
    while procs and time.monotonic() < deadline:  # Ray's daemons take a moment to exit after shutdown
        time.sleep(0.2)
        procs = ours(before["token"])
    problems = [f"process {pid}: {cmd}" for pid, cmd in sorted(procs.items())]
    for pid in procs:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    now = _read(ADDRESS_FILE)
    # A new address that still answers belongs to a live cluster that is not ours (ours are ended
    # above, found by the token): another session's Ray on this machine; /tmp/ray is shared.
    if now is not None and now != before["address_file"] and not _answers(now):  # a Cluster never shut down
        problems.append(f"{ADDRESS_FILE} now names {now.decode(errors='replace')[:60]} (removed)")
        try:
            os.unlink(ADDRESS_FILE)
        except OSError:
            pass
    return problems
