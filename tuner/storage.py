"""Where Ray Tune keeps a sweep's experiment state and checkpoints (`run.storage` / `--storage`).

Default: `<sweep folder>/ray` on the driver, as before. With a storage folder or bucket URI
(`s3://BUCKET/PREFIX?endpoint_override=HOST:PORT&scheme=http` for a non-AWS endpoint), Ray's
storage_path is that URI and the experiment is named after the sweep folder, so the state lives at
`<storage>/<sweep folder name>` and every node writes its checkpoints there through pyarrow; only
the small outputs (trials.csv, summary.json, best_config.yaml, the report) stay in `--output`.
"""

from __future__ import annotations

import os
import threading
import urllib.parse

from trainables.errors import TunerError, excerpt

DEFAULT_PROBE_TIMEOUT_S = 30.0


def probe_timeout() -> float:
    """TUNER_STORAGE_TIMEOUT in seconds, read when used: a bad value is one line, not an import error."""
    raw = os.environ.get("TUNER_STORAGE_TIMEOUT", "")
    try:
        value = float(raw) if raw else DEFAULT_PROBE_TIMEOUT_S
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise TunerError(f"TUNER_STORAGE_TIMEOUT={raw[:40]!r}: expected seconds in (0, 3600]")
    return value


def is_uri(storage: str) -> bool:
    return "://" in storage


def resolve(storage: str | None) -> str | None:
    """A local storage folder as an absolute path (Ray requires one); URIs unchanged."""
    if storage is None or is_uri(storage):
        return storage
    return os.path.abspath(os.path.expanduser(storage))


def location(storage: str | None, sweep_dir: str) -> tuple[str, str]:
    """(storage_path, experiment name) for Ray's RunConfig."""
    if storage is None:
        return os.path.abspath(sweep_dir), "ray"
    return resolve(storage), os.path.basename(os.path.normpath(sweep_dir))


def experiment_path(storage: str | None, sweep_dir: str) -> str:
    """The experiment's folder or URI: what Tuner.restore and ExperimentAnalysis read."""
    root, name = location(storage, sweep_dir)
    if not is_uri(root):
        return os.path.join(root, name)
    parts = urllib.parse.urlsplit(root)  # the query (endpoint_override=...) stays at the end
    return urllib.parse.urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/" + name))


def filesystem(uri: str):
    """(pyarrow filesystem, path inside it) for a storage URI or folder."""
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(uri if is_uri(uri) else resolve(uri))


def probe(storage: str | None, key: str = "run.storage", create: bool = True) -> None:
    """Storage that cannot be reached or written is one line now, before any trial starts (a
    bucket that is missing, an endpoint that refuses or stays silent, a folder we cannot create).
    Bounded by TUNER_STORAGE_TIMEOUT seconds: pyarrow's own retries can take minutes. A resume
    (create=False) must find a storage folder, not make an empty one."""
    if storage is None:
        return
    if not create and not is_uri(storage) and not os.path.isdir(resolve(storage)):
        raise TunerError(f"{key}: {excerpt(storage, 100)}: no such folder; pass --storage with the folder "
                         "or URI the sweep's state moved to")
    timeout, problem = probe_timeout(), []

    def attempt() -> None:
        try:
            fs, path = filesystem(storage)
            root = path.rstrip("/")
            if not is_uri(storage):
                fs.create_dir(root, recursive=True)  # a folder Ray would create anyway
            marker = f"{root}/.tuner-probe-{os.getpid()}"  # a bucket: only this object, then deleted
            with fs.open_output_stream(marker) as fh:
                fh.write(b"ok")
            fs.delete_file(marker)
        except Exception as e:  # noqa: BLE001 - pyarrow's OSError/ArrowInvalid: one line either way
            problem.append(" ".join(str(e).split())[:200] or type(e).__name__)

    t = threading.Thread(target=attempt, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        problem.append(f"no answer within {timeout:g} s (TUNER_STORAGE_TIMEOUT)")
    if problem:
        raise TunerError(f"{key}: cannot write to {excerpt(storage, 100)}: {problem[0]}")
