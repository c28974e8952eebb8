"""benchmarks.side_by_side and `benchmarks.peers --peer_command`: the peer's figure read from its
output, runs alternated peer first and last, each project run set against the faster peer run
beside it, and a failing peer reported in one line before any project run."""

import shlex
import subprocess
import sys

import pytest

from benchmarks import side_by_side

PUREJAXRL_LINE = (
    "PureJaxRL seeds=8 steps=50000: compile 9.1 s, run 21.05 s, 19,003 env steps/s total, "
    "last returns 6.21"
)


def python_command(code: str) -> str:
    """A shell command running ``code`` in this interpreter."""
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"


def test_peer_figure_reads_the_last_number_in_the_unit():
    assert side_by_side.peer_figure(PUREJAXRL_LINE, "env steps/s") == 19_003.0
    output = (
        "warmup 5.0 agent steps/s\nCleanRL threads=2: 3072 agent steps in 39 s: 78.0 agent steps/s"
    )
    assert side_by_side.peer_figure(output, "agent steps/s") == 78.0
    assert (
        side_by_side.peer_figure("-> 1,234,567.25 examples/s total", "examples/s") == 1_234_567.25
    )


def test_peer_figure_refuses_output_without_the_unit():
    with pytest.raises(ValueError, match="no '<number> env steps/s'"):
        side_by_side.peer_figure("78.0 agent steps/s", "env steps/s")
    with pytest.raises(ValueError, match="printed 0.0 examples/s: no rate"):
        side_by_side.peer_figure("0 examples in 0.00 s -> 0.0 examples/s", "examples/s")


def test_runs_alternate_peer_first_and_last():
    order = []
    peer_figures, project_figures = iter([10.0, 20.0, 12.0]), iter([15.0, 30.0])

    def peer():
        order.append("peer")
        return next(peer_figures)

    def project():
        order.append("project")
        return next(project_figures)

    assert side_by_side.alternate(peer, project, rounds=2) == ([10.0, 20.0, 12.0], [15.0, 30.0])
    assert order == ["peer", "project", "peer", "project", "peer"]


def test_each_project_run_is_set_against_the_faster_peer_run_beside_it():
    # The first project run sits between peers at 10 and 20, the second between 20 and 12.
    assert side_by_side.paired_ratios([10.0, 20.0, 12.0], [15.0, 30.0]) == [0.75, 1.5]
    line = side_by_side.ratio_line([10.0, 20.0, 12.0], [15.0, 30.0], "env steps/s")
    assert line.startswith("ratios 0.75x, 1.50x") and "peer 10.0, 20.0, 12.0 env steps/s" in line


def test_run_peer_reads_stdout_then_stderr_and_reports_a_failure_in_one_line():
    assert (
        side_by_side.run_peer(python_command(f"print({PUREJAXRL_LINE!r})"), "env steps/s")
        == 19_003.0
    )
    logged = "import sys; sys.stderr.write('I1204 peer.py] 55.5 examples/s\\n')"
    assert side_by_side.run_peer(python_command(logged), "examples/s") == 55.5
    failing = "import sys; print('starting'); sys.exit('no checkout at ~/purejaxrl')"
    with pytest.raises(ValueError, match="status 1: no checkout at ~/purejaxrl"):
        side_by_side.run_peer(python_command(failing), "env steps/s")


def run_peers(*flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.peers", *flags],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_side_by_side_run_prints_each_run_and_the_ratio_to_the_fastest_peer_variant():
    fast = python_command("print('lop: 20000 examples in 5.00 s -> 4,000.0 examples/s')")
    slow = python_command("print('lop: 20000 examples in 6.67 s -> 3,000.0 examples/s')")
    result = run_peers(
        "--workload=bitflip_lop",
        "--examples=20000",
        "--repeats=1",
        "--rounds=1",
        f"--peer_command={slow}",
        f"--peer_command={fast}",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[1:6]] == [
        "peer (command 1)",
        "peer (command 2)",
        "bitflip_lop",
        "peer (command 1)",
        "peer (command 2)",
    ]
    project = float(lines[3].split(" -> ")[1].split(" examples/s")[0].replace(",", ""))
    assert lines[6].startswith(f"ratios {project / 4000.0:.2f}x ")
    assert "peer 4,000.0, 4,000.0 examples/s" in lines[6]


def test_a_failing_peer_stops_the_run_before_the_project_runs():
    result = run_peers("--workload=bitflip_lop", f"--peer_command={python_command('1/0')}")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "benchmarks.peers: the peer command exited with status 1: "
        "ZeroDivisionError: division by zero"
    )
    assert "bitflip_lop:" not in result.stdout
