"""A peer's command and the project, run in turn on one machine, and the ratios of their figures.

Throughput on a shared machine drifts by tens of percent within the hour, so a ratio means
something only between runs made back to back. `alternate` runs the peer first and last with the
project between (peer, project, peer, ...), and `paired_ratios` sets each project run against the
faster of the two peer runs beside it: the pairing that flatters the project least. A peer is any
shell command (its own checkout and venv) that prints its figure as ``<number> <unit>``
(`peer_figure`). Flag-free, so that tests and every benchmark module can import it;
`benchmarks.peers --peer_command` is the command-line front end.
"""

from __future__ import annotations

import re
import subprocess
from typing import Callable


def peer_figure(output: str, unit: str) -> float:
    """The last ``<number> <unit>`` in a peer's output (the number may carry thousands commas)."""
    matches = re.findall(rf"(\d[\d,]*(?:\.\d+)?)\s+{re.escape(unit)}", output)
    if not matches:
        raise ValueError(f"the peer command printed no '<number> {unit}'")
    figure = float(matches[-1].replace(",", ""))
    if figure <= 0:
        raise ValueError(f"the peer command printed {matches[-1]} {unit}: no rate to compare with")
    return figure


def run_peer(command: str, unit: str) -> float:
    """Runs the peer's shell command to its end and reads its figure from what it printed."""
    result = subprocess.run(command, shell=True, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        last = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()[-1]
        raise ValueError(f"the peer command exited with status {result.returncode}: {last}")
    try:
        return peer_figure(result.stdout, unit)
    except ValueError:  # a peer that logs its figure (logging writes to stderr)
        return peer_figure(result.stderr, unit)


def alternate(
    run_peer_once: Callable[[], float], run_project_once: Callable[[], float], rounds: int
) -> tuple[list[float], list[float]]:
    """(peer figures, project figures) of runs in the order peer, project, peer, ..., peer:
    every project run has a peer run right before and right after it on the same machine."""
    peers, projects = [run_peer_once()], []
    for _ in range(rounds):
        projects.append(run_project_once())
        peers.append(run_peer_once())
    return peers, projects


def paired_ratios(peers: list[float], projects: list[float]) -> list[float]:
    """Each project figure over the faster of the two peer figures around it (higher is faster)."""
    return [run / max(before, after) for run, before, after in zip(projects, peers, peers[1:])]


def ratio_line(peers: list[float], projects: list[float], unit: str) -> str:
    """The summary of an alternated comparison."""
    ratios = ", ".join(f"{ratio:.2f}x" for ratio in paired_ratios(peers, projects))
    return (
        f"ratios {ratios} (each project run over the faster peer run beside it); peer "
        f"{', '.join(f'{figure:,.1f}' for figure in peers)} {unit}; project "
        f"{', '.join(f'{figure:,.1f}' for figure in projects)} {unit}"
    )
