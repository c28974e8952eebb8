"""The papers' headline claims, each a module that trains its arms and returns a verdict.

=========================  ====================================================================
``label_reset``            (a) NaP: no norm < LayerNorm < LayerNorm + NaP on random-label resets
``nonstationarity_types``  (b) Disentangling: LayerNorm + L2 keeps plasticity across
                           nonstationarity types where the baseline loses it
``effective_lr``           (c) NaP: NaP holds per-layer effective learning rates, LN decays them;
                           LN's implicit per-layer schedule replayed under NaP recovers LN
``large_offset``           (d) Disentangling: large regression offsets damage later trainability
``sequential_games``       (e) NaP: revisits of a game in a MinAtar sequence vs a fresh network
``dormant_grid``           (f) NaP: dormant units per optimizer × norm
``interventions_nap``      (g) NaP: each other intervention's online accuracy rises with NaP added
=========================  ====================================================================

A claim module defines ``NAME``, ``SUMMARY``, ``configs(scale, seeds)`` ({run name: config} of
the runs it trains first; the paper scale's configs are for a GPU), ``check(config)`` (raises
on a config that cannot run; ``--dry_run`` calls it) and ``run(workdir, scale, seeds,
run_options, data_dir) -> ClaimResult`` (`run_options`: the launch's progress bar, stop request
and early stop, `plasticity.launch.Launch.run_options`; a run that stops early raises
`base.ClaimStopped`; `data_dir`: where the paper scale's CIFAR-10 or MNIST files are; the cpu and
smoke scales train on the digits scikit-learn ships, or on MinAtar); ``TRAINS_FIRST``, where a
claim trains another claim's runs first, names that claim. `run_claims` runs one or all of them
and `summary_text` prints their table (`benchmarks.claims.base`). Each claim directory records
the scale and seeds it holds (``claim.json``), so that a command asking for others is refused
before any claim trains.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from benchmarks.claims import base

NAMES = (
    "label_reset",
    "nonstationarity_types",
    "effective_lr",
    "large_offset",
    "sequential_games",
    "dormant_grid",
    "interventions_nap",
)
_MODULES = {
    "label_reset": "label_reset",
    "nonstationarity_types": "nonstationarity",
    "effective_lr": "effective_lr",
    "large_offset": "large_offset",
    "sequential_games": "sequential_games",
    "dormant_grid": "dormant_grid",
    "interventions_nap": "interventions_nap",
}
DEFAULT_SEEDS = {"smoke": 2, "cpu": 3, "paper": 3}


def module(name: str):
    """The module of claim `name` (a one-line ValueError for an unknown one)."""
    if name not in _MODULES:
        raise ValueError(f"unknown claim {name!r}; known: {', '.join(NAMES)} or 'all'")
    return importlib.import_module(f"benchmarks.claims.{_MODULES[name]}")


def chosen(claim: str) -> tuple[str, ...]:
    if claim == "all":
        return NAMES
    module(claim)
    return (claim,)


def claim_dirs(name: str, root: Path) -> list[Path]:
    """The claim directories claim `name` trains into: its own and those of the claims whose
    runs it trains first (its module's ``TRAINS_FIRST``, e.g. (c) trains (a)'s sweep)."""
    first = getattr(module(name), "TRAINS_FIRST", ())
    return [root / name, *(root / other for other in first)]


def write_configs(
    name: str, directory: Path, scale: str, seeds: int, data_dir: str | None = None
) -> list[Path]:
    """Writes (and checks) the configs of claim `name` as ``<directory>/<run>.config.json``."""
    claim = module(name)
    written = []
    directory.mkdir(parents=True, exist_ok=True)
    for run_name, config in claim.configs(scale, seeds).items():
        if "data" in config:
            config = base.with_data_dir(config, data_dir)
        claim.check(config)
        path = directory / f"{run_name}.config.json"
        path.write_text(json.dumps(config.to_dict(), indent=1, default=list) + "\n")
        written.append(path)
    return written


def checked_data_dir(data_dir: str | None) -> str | None:
    """``--data_dir`` as the claims take it: None for none (or an empty value); a one-line
    ValueError for a path that is no directory."""
    if not data_dir:
        return None
    if not Path(data_dir).expanduser().is_dir():
        raise ValueError(f"--data_dir {data_dir} is not a directory")
    return data_dir


def unused_data_dir(claim: str, scale: str, data_dir: str | None) -> str | None:
    """The note a command gets when it names a data dir that none of the chosen claims reads at
    this scale (only the paper scale trains on dataset files)."""
    if not data_dir:
        return None
    from benchmarks import datasets  # noqa: PLC0415

    for name in chosen(claim):
        for config in module(name).configs(scale, 1).values():
            dataset = config.get("data") and datasets.canonical_name(config.data.name)
            if dataset and dataset not in datasets.FILELESS_DATASETS:
                return None
    which = "no claim reads" if claim == "all" else f"{claim} reads no"
    where = "" if scale == "paper" else " (only --scale=paper trains on CIFAR-10 and MNIST files)"
    return f"data dir {data_dir} is unused: {which} dataset files at --scale={scale}{where}"


def run_claims(
    claim: str,
    workdir: str | Path,
    scale: str = "cpu",
    seeds: int | None = None,
    run_options: Mapping[str, Any] = base.NO_RUN_OPTIONS,
    dry_run: bool = False,
    data_dir: str | None = None,
) -> list[base.ClaimResult]:
    """Runs one claim or 'all' into ``<workdir>/<claim>`` with the launch's ``run_options``,
    reading dataset files from `data_dir`; returns the results (none when `dry_run`: the configs
    are written and checked instead). A run stopped early raises `base.ClaimStopped`, and so
    does a stop request that arrives during a claim's last run, once that claim's table is
    written and before the next claim starts: the claims before keep their results, and
    relaunching resumes."""
    base.check_scale(scale)
    names = chosen(claim)
    data_dir = checked_data_dir(data_dir)
    seeds = DEFAULT_SEEDS[scale] if seeds is None else int(seeds)
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    root = Path(workdir)
    for name in () if dry_run else names:  # before any claim trains
        for directory in claim_dirs(name, root):
            base.check_claim_dir(directory, scale, seeds)
    results = []
    for index, name in enumerate(names):
        if index and not dry_run and base.stop_requested(run_options):  # as a claim finished
            raise base.ClaimStopped(None, after=names[index - 1])
        if dry_run:
            for path in write_configs(name, root / name, scale, seeds, data_dir):
                print(f"{name}: {path}")
            continue
        try:
            result = module(name).run(root / name, scale, seeds, run_options, data_dir)
        finally:  # trained, stopped or failed: what it wrote holds this scale and these seeds
            for directory in claim_dirs(name, root):
                if directory.is_dir():
                    base.mark_claim_dir(directory, scale, seeds)
        base.write_result(result, root / name)
        print(base.table_lines([result])[-len(result.rows) :][0], flush=True)
        results.append(result)
    if results and claim == "all":
        (root / "summary.md").write_text(summary_text(results) + "\n")
    return results


def summary_text(results: Sequence[base.ClaimResult]) -> str:
    """The table of every claim run, then each comparison behind the verdicts."""
    lines = base.table_lines(results) + ["", "Comparisons (paired over seeds, 95% t-interval):"]
    for result in results:
        lines.append(f"{result.claim}:")
        lines.extend(base.comparison_lines(result))
    return "\n".join(lines)
