"""Where a sweep came from, recorded on its MLflow runs: the spec file, its SHA-256, the git commit.

Tag names are MLflow's own where MLflow has one (`mlflow.source.name`, `mlflow.source.git.commit`:
the UI's Source column and run page show them); the rest are `tuner.*`.
"""

from __future__ import annotations

import hashlib
import os
import subprocess

SWEEP_STATUS = "tuner.sweep_status"  # the parent's state; `status` is for trials only (issue 17)


def spec_sha256(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def git_commit(*paths: str) -> str | None:
    """HEAD of the first git repository holding one of `paths` (folders or files), else None.
    Never fails: no git binary, not a repository, a hung filesystem (timeout) all give None."""
    for p in paths:
        folder = p if os.path.isdir(p) else os.path.dirname(os.path.abspath(p))
        try:
            out = subprocess.run(["git", "-C", folder, "rev-parse", "HEAD"], capture_output=True,
                                 text=True, timeout=5, check=False)
        except (OSError, subprocess.SubprocessError):
            return None  # git absent: nothing else will work either
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    return None


def source_tags(spec_path: str) -> dict[str, str]:
    """Tags every run of the sweep carries: MLflow's Source column then shows the spec file."""
    tags = {"mlflow.source.name": os.path.abspath(spec_path), "mlflow.source.type": "LOCAL"}
    commit = git_commit(spec_path, os.getcwd())
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def parent_tags(spec_path: str) -> dict[str, str]:
    return {**source_tags(spec_path), "tuner.spec_sha256": spec_sha256(spec_path)}


def version() -> str:
    """The installed distribution's version; from pyproject.toml when run from a source checkout."""
    from importlib import metadata

    try:
        return metadata.version("tuner")
    except metadata.PackageNotFoundError:
        import re

        path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pyproject.toml")
        try:
            with open(path) as fh:
                found = re.search(r'^version\s*=\s*"([^"]+)"', fh.read(), re.M)
        except OSError:
            found = None
        return found.group(1) if found else "unknown"
