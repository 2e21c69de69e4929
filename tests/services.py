"""Services a team's shared setup runs, started on loopback for a test: PostgreSQL (Debian's
package), an S3 API (moto's standalone server) and an MLflow tracking server backed by both.

Each is a context manager that waits for the service to answer (an event, not a sleep) and ends it
in `finally`, also when the test fails or times out. A service that cannot start here (no
PostgreSQL binaries, no moto) raises `Unavailable`, which the tests turn into a skip with the reason.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from typing import Iterator

from helpers import kill_group

PG_USER = "tuner"  # the role sweeps connect as; its password travels in PGPASSWORD, never in a URI
START_TIMEOUT = 120.0  # s: a service that does not answer by then failed (machines here are noisy)


class Unavailable(Exception):
    """This machine cannot run the service (the message says why)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(ready, what: str, proc: subprocess.Popen | None = None, timeout: float = START_TIMEOUT) -> None:
    """Poll `ready()` until true; fail at the deadline, or at once if `proc` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if ready():
                return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what} exited ({proc.returncode}) before it answered")
        time.sleep(0.1)
    raise AssertionError(f"{what} did not answer within {timeout:.0f}s")


def port_answers(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - loopback only
        return r.status == 200


def _pg_bin(name: str) -> str:
    """Debian keeps the server's tools in /usr/lib/postgresql/<version>/bin (newest first), off PATH."""
    versions = sorted(os.listdir("/usr/lib/postgresql"), reverse=True) if os.path.isdir("/usr/lib/postgresql") else []
    for p in [f"/usr/lib/postgresql/{v}/bin/{name}" for v in versions] + [shutil.which(name) or ""]:
        if p and os.path.exists(p):
            return p
    raise Unavailable(f"PostgreSQL's {name} is not installed (apt-get install postgresql)")


def _as_owner(cmd: list[str], owner: str | None) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run its tools as the `postgres` user."""
    return ["runuser", "-u", owner, "--", *cmd] if owner else cmd


@dataclass(frozen=True)
class Postgres:
    port: int
    password: str

    def uri(self, db: str, driver: str = "postgresql+psycopg2") -> str:
        """A URI without the password: clients read it from PGPASSWORD (libpq's environment)."""
        return f"{driver}://{PG_USER}@127.0.0.1:{self.port}/{db}"

    def env(self) -> dict[str, str]:
        return {"PGPASSWORD": self.password}


@contextlib.contextmanager
def postgres(databases: tuple[str, ...] = ("mlflow", "optuna")) -> Iterator[Postgres]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 with password auth, role `tuner` and `databases`."""
    initdb, pg_ctl, psql = _pg_bin("initdb"), _pg_bin("pg_ctl"), _pg_bin("psql")
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres").pw_name
        except KeyError:
            raise Unavailable("running as root and there is no `postgres` user to run PostgreSQL as") from None
    root = tempfile.mkdtemp(prefix="tuner-pg-")
    data, password, port = os.path.join(root, "data"), os.urandom(12).hex(), free_port()
    pwfile = os.path.join(root, "pw")
    with open(pwfile, "w") as fh:
        fh.write(password)
    if owner:
        ids = pwd.getpwnam(owner)
        for p in (root, pwfile):
            os.chown(p, ids.pw_uid, ids.pw_gid)
    run = lambda cmd: subprocess.run(_as_owner(cmd, owner), capture_output=True, text=True, timeout=START_TIMEOUT)  # noqa: E731
    started = False
    try:
        r = run([initdb, "-D", data, "-U", PG_USER, "--pwfile", pwfile, "--auth=scram-sha-256", "-E", "UTF8"])
        if r.returncode:
            raise AssertionError(f"initdb failed: {r.stderr.strip()[-500:]}")
        opts = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root} -c max_connections=200"
        r = run([pg_ctl, "-D", data, "-o", opts, "-l", os.path.join(root, "log"), "-w", "-t", str(int(START_TIMEOUT)), "start"])
        started = r.returncode == 0
        if not started:
            raise AssertionError(f"PostgreSQL did not start: {r.stderr.strip()[-500:]}")
        env = {**os.environ, "PGPASSWORD": password}
        for db in databases:
            subprocess.run([psql, "-h", "127.0.0.1", "-p", str(port), "-U", PG_USER, "-d", "postgres", "-v", "ON_ERROR_STOP=1",
                            "-c", f"CREATE DATABASE {db}"], check=True, capture_output=True, env=env, timeout=60)
        yield Postgres(port, password)
    finally:
        if started:
            run([pg_ctl, "-D", data, "-m", "immediate", "-w", "stop"])
        shutil.rmtree(root, ignore_errors=True)


@dataclass(frozen=True)
class S3:
    endpoint: str

    def env(self) -> dict[str, str]:
        """What boto3 (MLflow's artifacts) and pyarrow (Ray's storage) need to reach this server."""
        return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ENDPOINT_URL": self.endpoint, "MLFLOW_S3_ENDPOINT_URL": self.endpoint}

    def make_bucket(self, name: str) -> None:
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                     region_name="us-east-1").create_bucket(Bucket=name)


@contextlib.contextmanager
def s3_server(log_dir: str) -> Iterator[S3]:
    """moto's standalone S3 server on a free loopback port (as Ray's own storage tests use)."""
    try:
        import moto.server  # noqa: F401  (only: is it installed?)
    except ImportError:
        raise Unavailable("moto[server] is not installed (pip install 'moto[server]')") from None
    port = free_port()
    with open(os.path.join(log_dir, "moto.log"), "w") as log:
        p = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        wait_for(lambda: http_ok(f"{endpoint}/moto-api/"), "moto S3 server", p)
        yield S3(endpoint)
    finally:
        kill_group(p)


@contextlib.contextmanager
def mlflow_server(backend_uri: str, artifacts: str, log_dir: str, env: dict[str, str]) -> Iterator[str]:
    """`mlflow server` on a free loopback port, runs in `backend_uri`, artifacts proxied to `artifacts`."""
    port = free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
           "--artifacts-destination", artifacts, "--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    with open(os.path.join(log_dir, "mlflow-server.log"), "w") as log:
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env}, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: http_ok(f"{url}/health"), "mlflow server", p)
        # /health answers before a worker has opened the database: make a real call through each worker
        for _ in range(4):
            wait_for(lambda: http_ok(f"{url}/api/2.0/mlflow/experiments/search?max_results=1"), "mlflow server's API", p)
        yield url
    finally:
        kill_group(p)


@contextlib.contextmanager
def optuna_dashboard(storage_url: str, log_dir: str, env: dict[str, str]) -> Iterator[str]:
    """optuna-dashboard on a free loopback port, reading `storage_url` (its password from `env`)."""
    try:
        import optuna_dashboard  # noqa: F401  (only: is it installed?)
    except ImportError:
        raise Unavailable("optuna-dashboard is not installed (pip install -e '.[test]')") from None
    port = free_port()
    exe = os.path.join(os.path.dirname(sys.executable), "optuna-dashboard")  # its console script, beside python
    cmd = [exe, storage_url, "--host", "127.0.0.1", "--port", str(port)]
    with open(os.path.join(log_dir, "optuna-dashboard.log"), "w") as log:
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env}, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: http_ok(f"{url}/api/meta"), "optuna-dashboard", p)
        yield url
    finally:
        kill_group(p)
