"""The whole tree has one format: `ruff format .` with the repository's `.ruff.toml`."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_tree_is_formatted_by_ruff():
    pytest.importorskip("ruff")
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "."],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, f"run `ruff format .`:\n{done.stdout}{done.stderr}"
