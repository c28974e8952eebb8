"""What every claim shares: scales, results, per-seed metrics from work dirs, tables, figures.

A claim (one module of `benchmarks.claims`) trains its arms through the standard runners
(`benchmarks.continual_sweep.run_experiment`, `agents.minatar_loop.train`) into work dirs under
its own directory, reads the rows back (`plasticity.analysis`), reduces each run to one number
per seed and compares arms seed by seed (`benchmarks.claims.stats`). Its result is a
`ClaimResult`: one or more `Row`s (an arm → mean ± CI table and the comparisons that decide the
verdict), the figures written and the minutes taken; `write_result` stores it as ``result.json``
and ``table.md`` next to the work dirs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import ml_collections
import numpy as np

from benchmarks.claims import stats
from plasticity import analysis

SCALES = ("smoke", "cpu", "paper")
RESULT_FILE = "result.json"
TABLE_FILE = "table.md"
CLAIM_FILE = "claim.json"  # the scale and seeds a claim's directory holds, once it has trained


@dataclasses.dataclass
class Comparison:
    """One directional test: `interval` over seeds of a per-seed quantity, expected to lie on
    the side of zero `direction` names (+1 above, −1 below)."""

    name: str
    direction: int
    interval: stats.Interval
    verdict: str = ""

    def __post_init__(self):
        if not self.verdict:
            self.verdict = stats.direction_verdict(self.interval, self.direction)

    def format(self) -> str:
        sign = ">" if self.direction > 0 else "<"
        return f"{self.name} {sign} 0: {self.interval.format()} → {self.verdict}"


@dataclasses.dataclass
class Row:
    """One line of a claim's table: a metric per arm (mean ± CI over seeds) and its verdict."""

    label: str
    metric: str
    arms: dict[str, stats.Interval]
    comparisons: list[Comparison]
    verdict: str = ""

    def __post_init__(self):
        if not self.verdict:
            self.verdict = stats.combine([c.verdict for c in self.comparisons])


@dataclasses.dataclass
class ClaimResult:
    """A claim's outcome: its rows, the overall verdict, minutes, figures and work dirs."""

    claim: str
    scale: str
    seeds: int
    rows: list[Row]
    seconds: float = 0.0
    figures: list[str] = dataclasses.field(default_factory=list)
    workdirs: list[str] = dataclasses.field(default_factory=list)
    verdict: str = ""
    notes: str = ""

    def __post_init__(self):
        if not self.verdict:  # over every comparison of every row: k/m means the same as a row's
            self.verdict = stats.combine(
                [c.verdict for row in self.rows for c in row.comparisons]
                or [row.verdict for row in self.rows]
            )

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values; a NaN or infinite number (one seed's interval, unknown minutes)
        becomes null, which strict JSON readers accept and `result_from_json` reads as NaN."""
        plain = json.loads(json.dumps(dataclasses.asdict(self), default=_jsonable, allow_nan=True))
        return _finite_or_null(plain)


def _finite_or_null(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_null(v) for v in value]
    return value


def _null_as_nan(value: Any) -> Any:
    return math.nan if value is None else value


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def result_from_json(data: Mapping[str, Any]) -> ClaimResult:
    """The inverse of `ClaimResult.to_json` (for ``result.json`` files)."""

    def interval(d):
        return stats.Interval(**{k: _null_as_nan(v) for k, v in d.items()})  # n is never null

    rows = [
        Row(
            r["label"],
            r["metric"],
            {arm: interval(v) for arm, v in r["arms"].items()},
            [
                Comparison(c["name"], c["direction"], interval(c["interval"]), c["verdict"])
                for c in r["comparisons"]
            ],
            r["verdict"],
        )
        for r in data["rows"]
    ]
    fields = {k: v for k, v in data.items() if k != "rows"}
    fields["seconds"] = _null_as_nan(fields.get("seconds", 0.0))
    return ClaimResult(rows=rows, **fields)


# ---------------------------------------------------------------------------------------------
# Tables.

TABLE_HEADER = ("claim", "arms", "metric per arm (mean ± 95% CI over seeds)", "verdict", "minutes")


def table_lines(results: Sequence[ClaimResult]) -> list[str]:
    """A Markdown table: one line per row of every claim (claim name and minutes on its first;
    "—" where the minutes are unknown, NaN)."""
    lines = ["| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * len(TABLE_HEADER)]
    for result in results:
        for index, row in enumerate(result.rows):
            name = result.claim if index == 0 else ""
            if row.label:
                name = f"{name} ({row.label})" if name else f"({row.label})"
            arms = ", ".join(row.arms)
            values = "; ".join(f"{arm} {iv.format()}" for arm, iv in row.arms.items())
            verdict = row.verdict
            if index == 0 and len(result.rows) > 1:
                verdict = f"{row.verdict} (claim: {result.verdict})"
            minutes = "" if index else "—"
            if index == 0 and math.isfinite(result.seconds):
                minutes = f"{result.seconds / 60:.1f}"
            lines.append(f"| {name} | {arms} | {row.metric}: {values} | {verdict} | {minutes} |")
    return lines


def comparison_lines(result: ClaimResult) -> list[str]:
    """Every comparison of a claim, one per line (the detail behind its verdicts)."""
    out = []
    for row in result.rows:
        prefix = f"[{row.label}] " if row.label else ""
        out.extend(f"  {prefix}{c.format()}" for c in row.comparisons)
    return out


def write_result(result: ClaimResult, directory: Path) -> None:
    """``result.json`` and ``table.md`` (the table, the comparisons, the figures) in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / RESULT_FILE).write_text(json.dumps(result.to_json(), indent=1) + "\n")
    text = table_lines([result]) + ["", "Comparisons (paired over seeds, 95% t-interval):"]
    text += comparison_lines(result)
    if result.notes:
        text += ["", result.notes]
    text += ["", *(f"![{Path(f).stem}]({Path(f).name})" for f in result.figures)]
    (directory / TABLE_FILE).write_text("\n".join(text) + "\n")


def claim_settings(directory: Path) -> tuple[Any, Any] | None:
    """(scale, seeds) of the claim `directory` holds: its ``claim.json``, else the
    ``result.json`` of a claim finished before claim.json was written; None for neither."""
    for name in (CLAIM_FILE, RESULT_FILE):
        try:
            stored = json.loads((directory / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(stored, dict):
            return stored.get("scale"), stored.get("seeds")
    return None


def check_claim_dir(directory: Path, scale: str, seeds: int) -> None:
    """One-line ValueError when `directory` holds a claim at another scale or seed count: its
    runs would refuse the relaunch only when reached, after the claims before it trained."""
    held = claim_settings(directory)
    if held is not None and held != (scale, seeds):
        raise ValueError(
            f"{directory} holds the claim at --scale={held[0]} --seeds={held[1]}, not "
            f"--scale={scale} --seeds={seeds}; relaunch with those flags to resume it, or use "
            "another --workdir"
        )


def mark_claim_dir(directory: Path, scale: str, seeds: int) -> None:
    """Writes ``claim.json`` (the scale and seeds) into `directory` once its claim has trained,
    stopped or failed there (bad input writes nothing, so leaves no directory to mark)."""
    directory.mkdir(parents=True, exist_ok=True)
    settings = {"scale": scale, "seeds": seeds}
    (directory / CLAIM_FILE).write_text(json.dumps(settings) + "\n")


# ---------------------------------------------------------------------------------------------
# Per-seed metrics from work-dir rows.


def load_rows(workdir: str | Path) -> list[dict[str, Any]]:
    """Every metrics row of a work dir (`plasticity.analysis.load_run`)."""
    return analysis.load_run(workdir).rows


def select(rows: Iterable[Mapping[str, Any]], event: str, **fields: Any) -> list[Mapping]:
    """Rows of `event` whose fields equal the given values (a float field within 1e-12)."""

    def matches(row, key, value):
        got = row.get(key)
        if isinstance(value, float) and isinstance(got, (int, float)):
            return abs(float(got) - value) <= 1e-12 * max(1.0, abs(value))
        return got == value

    return [
        row
        for row in rows
        if row.get("event") == event and all(matches(row, k, v) for k, v in fields.items())
    ]


def per_seed(
    rows: Iterable[Mapping[str, Any]],
    value: Callable[[Mapping[str, Any]], float | None] | str,
    keep: Callable[[Mapping[str, Any]], bool] = lambda row: True,
    reduce: Callable[[np.ndarray], float] = np.mean,
) -> dict[int, float]:
    """{seed: reduce(values)} over the rows `keep` accepts; `value` a key or a function of a
    row (None or non-finite values are skipped; a seed with none left is NaN)."""
    get = (lambda row: row.get(value)) if isinstance(value, str) else value
    by_seed: dict[int, list[float]] = {}
    for row in rows:
        if not keep(row):
            continue
        v = analysis.number(get(row))
        by_seed.setdefault(int(row["seed"]), [])
        if v is not None:
            by_seed[int(row["seed"])].append(v)
    return {s: float(reduce(np.asarray(v))) if v else math.nan for s, v in sorted(by_seed.items())}


def interval_of(values: Mapping[int, float]) -> stats.Interval:
    return stats.t_interval(list(values.values()))


def paired(name: str, direction: int, a: Mapping[int, float], b: Mapping[int, float] | None = None):
    """A `Comparison` of a − b (or of a alone) seed by seed."""
    diffs = stats.paired_differences(a, b) if b is not None else np.asarray(list(a.values()))
    return Comparison(name, direction, stats.t_interval(diffs))


def layer_mean(row: Mapping[str, Any], metric: str, log: bool = False) -> float | None:
    """Mean over the hidden layers of ``<metric>/<layer>`` keys (the output layer excluded);
    with `log`, the mean of the logarithms (a geometric mean's log)."""
    values = []
    for key, value in row.items():
        if not key.startswith(metric + "/") or key.split("/")[-1].startswith("output"):
            continue
        v = analysis.number(value)
        if v is None or (log and v <= 0):
            continue
        values.append(math.log(v) if log else v)
    return float(np.mean(values)) if values else None


# ---------------------------------------------------------------------------------------------
# Running.


# A claim's runs without a launch: progress bars shown, no stop request, no early stop.
NO_RUN_OPTIONS: Mapping[str, Any] = {}


class Timer:
    """Wall-clock seconds of a claim's training, kept across relaunches: a claim whose work dirs
    were all complete already keeps the minutes stored by the run that trained it."""

    def __init__(self):
        self.start = time.perf_counter()
        self.trained = False

    def mark_trained(self, result: Any) -> None:
        if not getattr(result, "already_complete", False):
            self.trained = True

    def seconds(self, directory: Path) -> float:
        elapsed = time.perf_counter() - self.start
        previous = directory / RESULT_FILE
        if not self.trained and previous.exists():
            try:
                return float(json.loads(previous.read_text()).get("seconds", elapsed))
            except (ValueError, TypeError, OSError):  # unreadable, or seconds written as null
                return elapsed
        return elapsed


def with_data_dir(
    config: ml_collections.ConfigDict, data_dir: str | None
) -> ml_collections.ConfigDict:
    """`config` reading its dataset files from `data_dir` (unchanged when None): the paper
    scale's CIFAR-10 and MNIST, which nothing downloads."""
    if data_dir is None:
        return config
    config = ml_collections.ConfigDict(config.to_dict())
    config.data.data_dir = str(data_dir)
    return config


class ClaimStopped(Exception):
    """A launch of claims stopped early: a stop request (Ctrl-C, SIGTERM) or
    ``--stop_after_checkpoints`` ended a run after a checkpoint, or a stop request arrived as a
    run finished, before the next one started. ``result`` is that run's
    `plasticity.run.RunResult`, or None when the request arrived during the last run of the
    claim ``after``, which then wrote its table, and the next claim did not start; relaunching
    resumes where the launch stood."""

    def __init__(self, result: Any, after: str | None = None):
        super().__init__(result.status_line() if result is not None else f"stopped after {after}")
        self.result = result
        self.after = after


def stop_requested(run_options: Mapping[str, Any]) -> bool:
    """Whether the launch's stop request (``run_options['should_stop']``) has arrived."""
    should_stop = run_options.get("should_stop")
    return should_stop is not None and bool(should_stop())


def check_finished(
    result: Any, timer: Timer, run_options: Mapping[str, Any], last: bool = False
) -> None:
    """Counts ``result`` as trained and raises `ClaimStopped` unless the claim may go on: the
    run completed and, before another run of the claim (not ``last``), no stop request arrived
    meanwhile. After its last run a claim still writes its table, the stop taking effect before
    the next claim (`benchmarks.claims.run_claims`)."""
    timer.mark_trained(result)
    if not result.completed or (not last and stop_requested(run_options)):
        raise ClaimStopped(result)


def run_continual(
    config: ml_collections.ConfigDict,
    workdir: Path,
    timer: Timer,
    run_options: Mapping[str, Any],
    data_dir: str | None = None,
    last: bool = True,
    **kwargs,
):
    """`benchmarks.continual_sweep.run_experiment` into `workdir` with the launch's
    ``run_options`` (`plasticity.launch.Launch.run_options`: progress bar, stop request, early
    stop), its dataset files read from `data_dir` when given; returns its rows, or raises
    `ClaimStopped` when it stopped early (`check_finished`; ``last``: no run of the claim
    follows)."""
    from benchmarks import continual_sweep  # noqa: PLC0415 - JAX loads only when training

    config = with_data_dir(config, data_dir)
    result = continual_sweep.run_experiment(config, workdir, **run_options, **kwargs)
    check_finished(result, timer, run_options, last)
    return load_rows(workdir)


def sweep_claim(
    name: str,
    build_config: Callable[[str, int], ml_collections.ConfigDict],
    evaluate: Callable[[list[dict[str, Any]], ml_collections.ConfigDict], list[Row]],
    figure: Callable[[list[dict[str, Any]], ml_collections.ConfigDict, Path], str],
    subdir: str = "sweep",
) -> Callable[..., ClaimResult]:
    """The ``run`` of a claim that is one continual sweep: it trains ``build_config(scale,
    seeds)`` into ``workdir/subdir``, then the rows give the verdict (``evaluate``) and the
    figure (``figure``, saved as ``workdir/name.png``)."""

    def run(
        workdir: Path,
        scale: str,
        seeds: int,
        run_options: Mapping[str, Any] = NO_RUN_OPTIONS,
        data_dir: str | None = None,
    ) -> ClaimResult:
        config = build_config(scale, seeds)
        timer = Timer()
        rows = run_continual(config, workdir / subdir, timer, run_options, data_dir=data_dir)
        return ClaimResult(
            name,
            scale,
            seeds,
            evaluate(rows, config),
            seconds=timer.seconds(workdir),
            figures=[figure(rows, config, workdir / f"{name}.png")],
            workdirs=[str(workdir / subdir)],
        )

    return run


def check_scale(scale: str) -> None:
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; known: {', '.join(SCALES)}")


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (figures are only written)."""
    import matplotlib  # noqa: PLC0415 - plotting loads only when a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def save_figure(fig, path: Path) -> str:
    """Writes a small PNG (90 dpi) and closes the figure; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    pyplot().close(fig)
    return str(path)


def draw_band(ax, x, per_seed_values: np.ndarray, label: str, color=None, **kwargs) -> None:
    """The seed mean of (seeds, points) values with its min–max band."""
    values = np.asarray(per_seed_values, dtype=np.float64)
    mean = np.nanmean(values, axis=0)
    line = ax.plot(x, mean, label=label, color=color, lw=1.5, **kwargs)[0]
    if values.shape[0] > 1:
        ax.fill_between(
            x, np.nanmin(values, 0), np.nanmax(values, 0), color=line.get_color(), alpha=0.2, lw=0
        )


def check_config(config: ml_collections.ConfigDict) -> None:
    """The one-line checks of a claim's config before anything is built: every variant of a
    continual sweep (`benchmarks.continual_config.check_config`) or of an RL run
    (`agents.configs.validate_config`, MinAtar)."""
    if "games" in config:
        from agents import configs  # noqa: PLC0415

        configs.expand_runs(config, "minatar", "unused")
        return
    from benchmarks import continual_config  # noqa: PLC0415

    for name, variant in continual_config.variant_configs(config):
        try:
            continual_config.check_config(variant)
        except ValueError as error:
            raise ValueError(f"variant {name!r}: {error}") from None


def task_rows(
    rows: Iterable[Mapping[str, Any]], variant: str, **grid: float
) -> list[Mapping[str, Any]]:
    """The 'task' rows of one arm: a variant at one grid point (e.g. ``l2=1e-4``)."""
    return select(rows, "task", variant=variant, **{k: float(v) for k, v in grid.items()})


def over_tasks(
    rows: Sequence[Mapping[str, Any]], key: str, tasks: Sequence[int] | range
) -> dict[int, float]:
    """{seed: mean of `key` over the given task indices} of one arm's task rows."""
    wanted = {int(t) for t in tasks}
    return per_seed(rows, key, keep=lambda row: int(row["task"]) in wanted)


def per_task_matrix(
    rows: Sequence[Mapping[str, Any]], key: str, num_tasks: int
) -> tuple[np.ndarray, list[int]]:
    """(seeds × tasks array of `key`, NaN where missing; the seeds) of one arm's task rows."""
    seeds = sorted({int(r["seed"]) for r in rows})
    out = np.full((len(seeds), num_tasks), np.nan)
    for row in rows:
        value = analysis.number(row.get(key))
        if value is not None and 0 <= int(row["task"]) < num_tasks:
            out[seeds.index(int(row["seed"])), int(row["task"])] = value
    return out, seeds


def diagnostics_matrix(
    rows: Sequence[Mapping[str, Any]],
    value: Callable[[Mapping[str, Any]], float | None],
) -> tuple[np.ndarray, np.ndarray]:
    """(steps, seeds × steps array) of a function of one arm's diagnostics rows (NaN gaps)."""
    steps = sorted({int(r["step"]) for r in rows})
    seeds = sorted({int(r["seed"]) for r in rows})
    out = np.full((len(seeds), len(steps)), np.nan)
    for row in rows:
        v = value(row)
        if v is not None and math.isfinite(v):
            out[seeds.index(int(row["seed"])), steps.index(int(row["step"]))] = v
    return np.asarray(steps), out


def resolved_variants(config: ml_collections.ConfigDict) -> list[tuple[str, Any]]:
    """(name, resolved config) of a continual sweep's variants."""
    from benchmarks import continual_config  # noqa: PLC0415

    return continual_config.variant_configs(config)


def smoke_scale(config: ml_collections.ConfigDict, seeds: int, **task: Any) -> None:
    """Shrinks a continual claim in place to a check of its plumbing: `common.smoke_scale`
    (a few tasks of a few steps, tiny layers), 128 examples, (16, 16) hidden units, every task
    in one compiled chunk (one checkpoint), `seeds` seeds."""
    from benchmarks.configs import common  # noqa: PLC0415

    common.smoke_scale(config, **task)
    config.data.max_train_examples = 128
    config.network.hidden_sizes = (16, 16)
    config.diagnostics.every = int(config.task.steps_per_task)
    config.run.tasks_per_chunk = int(config.task.num_tasks)
    config.num_seeds = seeds


def variant_names(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The variants a sweep runs, in order."""
    return tuple(config.variant_order) or tuple(config.variants.keys())
