"""Checks on where a sweep will write (tracking URI, output folder), made before anything is written.

They only look: nothing here creates a file or folder that stays behind. Light on purpose
(no mlflow, no ray), so the CLI can run them before the heavy imports.
"""

from __future__ import annotations

import os
import tempfile
import urllib.parse

from trainables.errors import excerpt, redact

# MLflow's tracking stores: REST servers, SQLAlchemy databases, local folders, Databricks
URI_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "file", "databricks", "databricks-uc")


def _nearest_existing(path: str) -> str:
    """`path` itself or its closest ancestor that exists (what mkdir -p would start from)."""
    path = os.path.abspath(path)
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def _writable_dir(path: str) -> bool:
    """Can we create entries in folder `path`? root passes os.access everywhere, so root probes."""
    if not os.access(path, os.W_OK | os.X_OK):
        return False
    if os.geteuid() != 0:
        return True
    try:  # e.g. /proc or a read-only mount: access() says yes to root, mkdir says no
        os.rmdir(tempfile.mkdtemp(prefix=".tuner-probe-", dir=path))
    except OSError:
        return False
    return True


def folder_problem(path: str) -> str | None:
    """Why a sweep could not create and write folder `path` (None: it can)."""
    if "\0" in path:
        return "contains a NUL byte"
    if any(len(part.encode("utf-8", "surrogateescape")) > 255 for part in path.split(os.sep)):
        return "has a name longer than 255 bytes"
    try:
        if os.path.exists(path) and not os.path.isdir(path):
            return "exists and is not a folder"
        base = _nearest_existing(path)
        if not os.path.isdir(base):
            return f"{excerpt(base)} is not a folder"
        if not _writable_dir(base):
            return "is not writable" if base == os.path.abspath(path) else f"cannot be created in {excerpt(base)} (not writable)"
    except (OSError, ValueError) as e:  # a NUL byte, a name too long
        return f"not a usable path ({type(e).__name__})"
    return None


def uri_problem(uri: str) -> str | None:
    """Why `uri` cannot be an MLflow tracking URI we can write to (None: it looks fine)."""
    try:
        parts = urllib.parse.urlsplit(uri)
        parts.port  # noqa: B018  raises ValueError on a bad port
    except ValueError as e:
        return f"not a valid URI ({e})"
    scheme = parts.scheme.lower().split("+", 1)[0]  # postgresql+psycopg2 -> postgresql
    if not scheme:  # a plain path: MLflow's local file store
        if not uri.strip():
            return "empty URI"
        problem = folder_problem(uri)
        return f"store folder {problem}" if problem else None
    if scheme not in URI_SCHEMES:
        return f"unknown scheme {excerpt(parts.scheme)}; valid: {', '.join(URI_SCHEMES)}"
    if scheme in ("http", "https") and not parts.hostname:
        return "no host name"
    if scheme == "sqlite":
        head = f"{parts.scheme}://"
        if uri.split("?", 1)[0] == head:
            return None  # in memory
        if not uri.startswith(head + "/"):
            return "expected sqlite:///RELATIVE.db or sqlite:////ABSOLUTE.db"
        db = uri.split("?", 1)[0][len(head) + 1:]
        if not db or db == ":memory:":
            return None
        if os.path.isdir(db):
            return "the database path is a folder"
        if os.path.isfile(db):
            return None if os.access(db, os.R_OK | os.W_OK) else "the database file is not writable"
        problem = folder_problem(db)  # the file will be created: same rules as a new folder
        return f"database path {problem}" if problem else None
    if scheme == "file":
        problem = folder_problem(urllib.parse.unquote(parts.path) or ".")
        return f"store folder {problem}" if problem else None
    return None


RDB_SCHEMES = ("sqlite", "postgresql", "mysql")  # what Optuna's RDBStorage (SQLAlchemy) is used with here


def rdb_problem(uri: str) -> str | None:
    """Why `uri` cannot be Optuna's RDB storage (None: it looks fine)."""
    scheme = urllib.parse.urlsplit(uri).scheme.lower().split("+", 1)[0] if "://" in uri else ""
    if scheme not in RDB_SCHEMES:
        return f"expected a database URL ({', '.join(s + '://...' for s in RDB_SCHEMES)})"
    return uri_problem(uri)


# pyarrow filesystems Ray Tune's storage_path takes; a plain path is a local (or mounted) folder
STORAGE_SCHEMES = ("s3", "gs", "gcs", "abfs", "abfss", "hdfs", "viewfs", "file")
_SECRET_QUERY = ("access_key", "secret_key", "session_token")


def storage_problem(uri: str) -> str | None:
    """Why `uri` cannot be run.storage (None: it looks fine). Keys in the URI are refused: the URI is
    written to sweep.json and logged, and pyarrow reads them from the environment (AWS_*) anyway."""
    if "://" not in uri:
        if not uri.strip():
            return "empty path"
        problem = folder_problem(uri)
        return f"storage folder {problem}" if problem else None
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError as e:
        return f"not a valid URI ({e})"
    if parts.scheme.lower() not in STORAGE_SCHEMES:
        return f"unknown scheme {excerpt(parts.scheme)}; valid: a folder, or {', '.join(s + '://' for s in STORAGE_SCHEMES)}"
    keys = {k.lower() for k, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)}
    if ":" in (parts.netloc.rpartition("@")[0] if "@" in parts.netloc else "") or keys & set(_SECRET_QUERY):
        return "credentials in the URI are not accepted (it is saved with the sweep); set them in the environment"
    if parts.scheme.lower() != "file" and not parts.netloc.rpartition("@")[2]:
        return "no bucket or host name"
    return None


def describe_uri(uri: str) -> str:
    """The URI as error messages quote it: credentials hidden, at most 80 chars."""
    text = redact(uri)
    return text if len(text) <= 80 else text[:77] + "..."
