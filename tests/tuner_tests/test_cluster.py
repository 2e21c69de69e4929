"""Which Ray a sweep runs on: never a stranger's. Without --address a private Ray on loopback; an
address that does not answer is one line and exit 2, in bounded time, before anything is written."""

import os
import shutil
import socket
import tempfile
import time

import pytest
from helpers import run_script, write_spec

from tuner import cluster
from trainables.errors import TunerError

TINY = {"name": "c", "model": "bpr_mf",
        "data": {"synthetic": {"n_users": 60, "n_items": 30, "mean_length": 6, "seed": 1}},
        "fixed": {"epochs": 1, "batch_size": 64}, "search": {"samples": 1, "concurrency": 1},
        "scheduler": {"type": "fifo"}}


def spec_file(tmp_path):
    return write_spec(tmp_path, TINY, "c.yaml")


def env_without_ray_address(**extra):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(extra)
    return env


def tuner_run(tmp_path, *args, timeout=240, **env):
    return run_script(["-m", "tuner", "run", spec_file(tmp_path), "--output", str(tmp_path / "out"), "--quiet",
                       *args], timeout=timeout, env=env_without_ray_address(**env))


@pytest.mark.parametrize("address,expected", [
    ("10.0.0.1:6379", ("10.0.0.1", 6379)), ("ray://head:10001", ("head", 10001)), ("[::1]:6390", ("::1", 6390))])
def test_addresses_are_parsed(address, expected):
    assert cluster._host_port(address) == expected


@pytest.mark.parametrize("address", ["nohost", "host:", "host:99999", ":80", "host:port"])
def test_malformed_addresses_are_one_line_errors(address):
    with pytest.raises(TunerError, match="expected auto, HOST:PORT or ray://HOST:PORT"):
        cluster._host_port(address)


def test_malloc_arenas_are_limited_unless_the_user_chose(monkeypatch):
    import platform

    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert cluster.limit_malloc_arenas() is False  # the user's setting wins; glibc read it at start
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    assert cluster.limit_malloc_arenas() is (platform.libc_ver()[0] == "glibc")


def test_connect_timeout_is_configurable(monkeypatch):
    monkeypatch.setenv("TUNER_RAY_CONNECT_TIMEOUT", "7.5")
    assert cluster.connect_timeout() == 7.5
    monkeypatch.setenv("TUNER_RAY_CONNECT_TIMEOUT", "soon")
    with pytest.raises(TunerError, match="TUNER_RAY_CONNECT_TIMEOUT"):
        cluster.connect_timeout()


@pytest.mark.ray
def test_private_ray_listens_on_loopback_only(ray_session):
    gcs = ray_session.get_runtime_context().gcs_address
    host, port = gcs.rsplit(":", 1)
    assert host == "127.0.0.1", gcs
    assert {n["NodeManagerAddress"] for n in ray_session.nodes() if n["Alive"]} == {"127.0.0.1"}
    listening = []  # local addresses that listen on the GCS port, from the kernel's socket tables
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            for row in fh.read().splitlines()[1:]:
                local, state = row.split()[1], row.split()[3]
                addr, hexport = local.rsplit(":", 1)
                if state == "0A" and int(hexport, 16) == int(port):
                    listening.append(addr)
    loopback = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}
    assert listening and set(listening) <= loopback, listening


@pytest.mark.ray
def test_a_stale_cluster_file_is_ignored(tmp_path):
    """Plain ray.init() reads RAY_TMPDIR/ray/ray_current_cluster and tries the dead cluster it names
    (seen: minutes of "Failed to connect to GCS"). A private temp dir keeps the planted file ours alone;
    short, since Ray's socket paths live below it."""
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    planted = os.path.join(ray_tmp, "ray", "ray_current_cluster")
    os.makedirs(os.path.dirname(planted))
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    with open(planted, "w") as fh:
        fh.write(dead)
    try:
        code, out, err = tuner_run(tmp_path, RAY_TMPDIR=ray_tmp)
        assert code == 0, err[-2000:]
        assert "best validation" in out
        with open(planted) as fh:
            assert fh.read() == dead  # our private Ray neither used nor replaced it
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.ray  # a `python -m tuner run` subprocess
@pytest.mark.parametrize("silent", [False, True], ids=["refused", "accepts-but-silent"])
def test_an_address_that_does_not_answer_is_one_line_and_writes_nothing(tmp_path, silent):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        if silent:
            s.listen(8)  # the kernel completes the handshake; nothing ever speaks Ray's protocol
        address = f"127.0.0.1:{s.getsockname()[1]}"
        t0 = time.monotonic()
        code, out, err = tuner_run(tmp_path, "--address", address, timeout=120, TUNER_RAY_CONNECT_TIMEOUT="4")
        took = time.monotonic() - t0
    assert code == 2, err[-2000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"tuner: error: --address {address}"), err[-2000:]
    assert len(lines[0]) <= 300
    assert not (tmp_path / "out").exists()
    assert took < 4 + 60, took  # bounded: the limit plus interpreter start-up on a loaded machine


@pytest.mark.ray  # a `python -m tuner run` subprocess
def test_ray_address_variable_counts_as_an_address(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    code, out, err = run_script(["-m", "tuner", "run", spec_file(tmp_path), "--output", str(tmp_path / "out")],
                                timeout=120, env=env_without_ray_address(RAY_ADDRESS=address))
    assert code == 2 and f"--address {address}" in err, err[-2000:]
    assert not (tmp_path / "out").exists()


def test_trials_no_node_can_hold_are_refused(tmp_path):
    from tuner import spec as specmod

    spec = specmod.load(spec_file(tmp_path), {"resources.cpu": 64})
    with pytest.raises(TunerError, match=r"resources\.cpu: each trial asks for 64 but the largest Ray node has 2"):
        specmod.check_resources(spec, 2.0, 0.0)
    specmod.check_resources(spec, 64.0, 0.0)
