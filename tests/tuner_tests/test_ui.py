"""`tuner ui`: the link is printed once the server answers; SIGTERM ends every process it started."""

import os
import re
import signal
import subprocess
import sys
import urllib.request

import pytest
from helpers import kill_group
from mlflow.tracking import MlflowClient

import leaks

pytestmark = pytest.mark.ray  # every test starts `python -m tuner ui` (and most a server)


@pytest.fixture
def output(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.create_experiment("ui-test")
    return tmp_path


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_ui_answers_before_the_link_and_ends_its_whole_group(output, sig):
    token = f"ui-{os.getpid()}-{sig}"
    env = {**os.environ, leaks.TOKEN_VAR: token}
    env["PATH"] = "/nonexistent"  # the server comes from this interpreter, not from PATH
    proc = subprocess.Popen([sys.executable, "-m", "tuner", "ui", str(output), "--port", "0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = proc.stdout.readline()  # blocks until the link is printed: the server must answer by then
        m = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        assert m, (line, proc.stderr.read() if proc.poll() is not None else "")
        urllib.request.urlopen(m.group(1) + "health", timeout=10).close()
        assert leaks.ours(token), "no server process found"
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 0
        assert leaks.left_behind({"token": token, "address_file": leaks._read(leaks.ADDRESS_FILE)}, 30) == []
    finally:
        kill_group(proc)  # tuner ui itself; its server runs in a group of its own, found by the token
        leaks.left_behind({"token": token, "address_file": leaks._read(leaks.ADDRESS_FILE)}, 0)


def test_ui_without_a_database_is_one_line(tmp_path):
    p = subprocess.run([sys.executable, "-m", "tuner", "ui", str(tmp_path)], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "no sweep folder" in p.stderr
