"""The source distribution carries the license setup.cfg declares and what the tests and docs
read beside the packages (MANIFEST.in), so that an sdist's tests can run."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Paths an sdist must hold besides the packages: what the tests read, and the docs they check.
NEEDED = (
    "LICENSE",
    "README.md",
    "BUILD_NOTES.md",
    ".ci/run",
    ".ruff.toml",
    "tests/conftest.py",
    "tests/test_readme.py",
    "tests/benchmarks/test_packaging.py",
    "docs/algorithms.md",
    "notebooks/plasticity_diagnostics.ipynb",
    "benchmarks/configs/nap_label_reset.py",
    "benchmarks/claims/label_reset.py",
)


def test_the_declared_license_is_shipped_as_the_apache_text():
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    assert setup["metadata"]["license"] == "Apache-2.0"
    assert setup["metadata"]["license_files"].split() == ["LICENSE"]
    text = (REPO / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "END OF TERMS AND CONDITIONS" in text


def test_an_sdist_holds_what_the_tests_and_docs_need(tmp_path):
    """Built from a copy of the checkout (setuptools stages the sdist's files in the folder it
    runs in, which would race with the suite's other workers reading the checkout). Needs
    setuptools in the environment: a Python 3.11 venv has it, one of 3.12 or later not."""
    pytest.importorskip("setuptools")
    source = tmp_path / "source"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "workdirs", "*.egg-info", "__pycache__", ".*_cache", "build"
        ),
    )
    dist = tmp_path / "dist"
    done = subprocess.run(
        [sys.executable, "-c", "from setuptools import setup; setup()", "-q"]
        + ["sdist", "--formats=gztar", "-d", str(dist)],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (archive,) = dist.glob("*.tar.gz")
    with tarfile.open(archive) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert not [path for path in NEEDED if path not in names]
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
