"""Tests of the command line every ``benchmarks.*`` tool shares (`benchmarks.timing.run_main`):
help and bad flags behave as the launchers' do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _tool(*args: str) -> subprocess.CompletedProcess:
    # conv_in_loops imports no JAX before its main runs: a second per call.
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.conv_in_loops", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("flag", ["--help", "-h", "--helpshort", "--helpfull"])
def test_help_prints_the_usage_and_exits_0(flag):
    done = _tool(flag)
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout.startswith("Convolutions inside compiled loops") and "--repeats" in done.stdout
    )
    assert ("only_check_flags" in done.stdout) == (flag == "--helpfull")  # absl's own flags


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--bogus", "Unknown command line flag 'bogus'"),
        ("--steps=0", "flag --steps=0: 0 is not a positive integer"),
        ("8", "unexpected argument '8'; flags take --name=value"),  # as from '--steps 8'
    ],
)
def test_a_bad_flag_is_one_line_and_exit_1(flag, message):
    done = _tool(flag)
    assert done.returncode == 1 and not done.stdout
    assert done.stderr == f"benchmarks.conv_in_loops: {message} (see --help)\n"
