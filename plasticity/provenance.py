"""What a launch ran on, for ``run_info.json``: the command line, the code's version, package
versions, devices and CPU (`plasticity.run.Run` appends one record per launch)."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

import jax

from plasticity import launch, runtime

# Packages whose versions a run records.
RECORDED_PACKAGES = (
    *("jax", "jaxlib", "flax", "optax", "chex", "orbax-checkpoint", "numpy", "ml_collections"),
    *("gymnax", "ale-py", "rlax"),
)


PACKAGE = "plasticity-testbed"  # this project's distribution name (setup.cfg)


def _git(repository: Path, *args: str) -> str | None:
    """A git command's output in ``repository`` (None when git or the repository is missing)."""
    try:
        done = subprocess.run(
            ["git", "-C", str(repository), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_version(repository: Path | None = None) -> dict[str, Any]:
    """Which code ran: in a checkout its commit and whether tracked files were edited since
    (``git_dirty``); in an installed copy the commit pip recorded when it installed from git
    (``direct_url.json``), else None; and the project's own version where it is installed.
    ``repository``: where the code lies (default: the directory holding this package)."""
    repository = repository or Path(__file__).resolve().parents[1]
    commit, dirty = None, None
    if (repository / ".git").exists():
        commit = _git(repository, "rev-parse", "HEAD") or None
        status = _git(  # without taking the index lock a user's own git command may need
            repository, "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"
        )
        dirty = None if status is None else bool(status)
    else:
        try:
            direct = package_metadata.distribution(PACKAGE).read_text("direct_url.json")
            commit = json.loads(direct or "{}").get("vcs_info", {}).get("commit_id")
        except (package_metadata.PackageNotFoundError, json.JSONDecodeError, AttributeError):
            commit = None
    try:
        version = package_metadata.version(PACKAGE)
    except package_metadata.PackageNotFoundError:
        version = None
    return {"git_commit": commit, "git_dirty": dirty, "version": version}


def run_info() -> dict[str, Any]:
    """What a launch ran on: command line (`launch.launch_command`) and the directory it ran
    in, the code (`code_version`), package versions, devices and CPU."""
    versions = {}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = package_metadata.version(name)
        except package_metadata.PackageNotFoundError:
            pass
    return {
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": launch.launch_command(sys.argv, getattr(sys, "orig_argv", [])),
        "cwd": os.getcwd(),  # what the command's relative paths (a --workdir) are relative to
        **code_version(),
        "python": platform.python_version(),
        "packages": versions,
        "backend": jax.default_backend(),
        "devices": [str(device) for device in jax.devices()],
        "process_count": jax.process_count(),
        "cpu": {"model": runtime.cpu_model(), "cores": os.cpu_count()},
        "host": platform.node(),
    }
