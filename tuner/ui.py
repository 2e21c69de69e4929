"""`tuner ui`: the MLflow UI for a sweep on 127.0.0.1, started with this interpreter's mlflow.

The link is printed only once the server answers (under load it takes minutes), and the server runs
in its own process group, which is ended whole on Ctrl+C or SIGTERM: `mlflow ui` starts uvicorn and
its workers, and ending only the first process left the others serving.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from trainables.errors import TunerError, redact
from tuner.sweepdir import read_sweep_meta

READY_TIMEOUT_S = 600.0  # a loaded 2-core machine took minutes to answer


def view_query(metric: str | None, mode: str | None) -> str:
    """URL query for MLflow 3.17's experiment page: the model-training view (the UI picks GenAI vs
    training from `workflowType`, else from a sidebar switch remembered in the browser, default
    GenAI; it does not read the experiment's tags), runs sorted by the trials' score."""
    from urllib.parse import urlencode

    query = {"workflowType": "machine_learning"}
    if metric:
        query.update(orderByKey=f"metrics.`best_{metric}`", orderByAsc=str(mode == "min").lower())
    return urlencode(query)


def target(run: str | None) -> tuple[str, str]:
    """(tracking URI, link fragment) for a sweep folder, or an output folder holding mlflow.db."""
    if run and os.path.isfile(os.path.join(run, "sweep.json")):
        meta = read_sweep_meta(run)
        return meta["tracking_uri"], f"#/experiments/{meta['experiment_id']}?{view_query(meta.get('metric'), meta.get('mode'))}"
    db = os.path.join(run or "runs", "mlflow.db")
    if not os.path.isfile(db):
        raise TunerError(f"{run or 'runs'}: no sweep folder (sweep.json) or mlflow.db here")
    return f"sqlite:///{os.path.abspath(db)}", ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url + "health", timeout=2).close()
        return True
    except OSError:
        return False


def _end_group(proc: subprocess.Popen) -> None:
    """SIGTERM the server's whole process group, then SIGKILL what is left after 10 s."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            os.killpg(proc.pid, 0)  # the leader is gone; are its workers?
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            pass


def serve(uri: str, link: str, port: int) -> int:
    """Run the UI until Ctrl+C / SIGTERM or until the server exits; 0 on a clean stop."""
    if not uri.startswith("sqlite:"):
        print(f"this sweep logs to a tracking server: open {redact(uri)}/{link}")
        return 0
    port = port or free_port()
    url = f"http://127.0.0.1:{port}/"
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    log = tempfile.TemporaryFile()  # the server's chatter, quoted only if it fails to start
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
                             "--host", "127.0.0.1", "--port", str(port)], start_new_session=True,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not _answers(url):
            if proc.poll() is not None:
                log.seek(0)
                last = (log.read().decode(errors="replace").strip().splitlines() or [""])[-1][:160]
                raise TunerError(f"mlflow ui exited with code {proc.returncode} before answering on {url}: {last}")
            if stop.wait(0.25) or time.monotonic() > deadline:
                if not stop.is_set():
                    raise TunerError(f"mlflow ui did not answer on {url} within {READY_TIMEOUT_S:.0f}s")
                return 0
        print(f"MLflow UI on {url}{link}  (Ctrl+C stops it)", flush=True)
        while not stop.wait(0.5):
            if proc.poll() is not None:
                return proc.returncode
        return 0
    finally:
        _end_group(proc)
        log.close()
