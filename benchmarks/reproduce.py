r"""Shows every headline claim of the two papers on a CPU: seeds, a verdict and a figure per claim.

  python -m benchmarks.reproduce CLAIM [--seeds=N] [--scale=smoke|cpu|paper] [--workdir=W]
      [--data_dir=D]
  python -m benchmarks.reproduce all

CLAIM is one of label_reset, nonstationarity_types, effective_lr, large_offset, sequential_games,
dormant_grid, interventions_nap (definitions, settings and measured results in each module of
`benchmarks.claims`), or ``all``. Each claim trains its arms × seeds through the standard runners
into work dirs under ``W/<claim>/`` (relaunching resumes them; a finished claim is only
re-evaluated), writes a figure ``W/<claim>/<claim>.png``, ``result.json`` and ``table.md``, and
prints one table: claim, arms, the claim's metric per arm (mean ± 95% t-interval over seeds), the
verdict and the minutes. A verdict is PASS only when every paired comparison it rests on (per-seed
differences between arms, 95% Student-t interval) excludes zero in the direction the paper reports
(`benchmarks.claims.stats`); otherwise PARTIAL k/m when k of its m comparisons pass (a claim counts
those of all its rows), else the verdict they share (INCONCLUSIVE, OPPOSITE) or NOT SHOWN when they
differ; TOO FEW SEEDS where fewer than two seeds give a value (``--seeds=1``). Ctrl-C, SIGTERM
and ``--stop_after_checkpoints`` stop the run in progress after a checkpoint (a stop request
that arrives as a run finishes stops before the next one); no later run or claim starts, and
relaunching the same command resumes it.

Scales: ``cpu`` (default; each claim ≤ 15 minutes on 2 cores with 3 seeds), ``smoke`` (the plumbing:
a few dozen steps per arm, 512 frames a game for the MinAtar claim, compile-bound, 3–5 minutes for
``all`` on 2 loaded cores; used by the tests; its verdicts mean nothing) and ``paper`` (the papers'
sizes, for a GPU; ``--dry_run`` writes and checks its configs without training; ``--data_dir`` names
where its CIFAR-10 and MNIST files are, as `scripts.train_continual` takes it).
"""

from __future__ import annotations

import sys

from absl import flags

from plasticity import launch

NAME = "reproduce"
DEFAULT_WORKDIR = "workdirs/reproduce"


def define_flags(values: flags.FlagValues) -> None:
    flags.DEFINE_enum(
        "scale", "cpu", ["smoke", "cpu", "paper"], "Size of every run.", flag_values=values
    )
    flags.DEFINE_integer(
        "seeds", None, "Seeds per arm (default 3; 2 at smoke scale).", flag_values=values
    )
    flags.DEFINE_bool(
        "dry_run",
        False,
        "Write and check every claim's configs (config.json files) without training.",
        flag_values=values,
    )
    flags.DEFINE_string(
        "data_dir",
        None,
        "Directory with the dataset files the paper scale trains on (CIFAR-10, MNIST).",
        flag_values=values,
    )


# The launcher's boolean flags (`plasticity.launch.define_common_flags`, `plasticity.distributed`):
# like this command's own, they take no value after them.
LAUNCHER_BOOLEANS = ("progress", "distributed")


def boolean_flags() -> set[str]:
    """Names of the flags that take no separate value: this command's booleans and the
    launcher's."""
    values = flags.FlagValues()
    define_flags(values)
    own = {name for name in values if isinstance(values[name], flags.BooleanFlag)}
    return own | set(LAUNCHER_BOOLEANS)


def split_claim(argv: list[str]) -> tuple[str | None, list[str]]:
    """(the positional CLAIM, the other arguments with a default --workdir added). A word right
    after a flag written without ``=`` is that flag's value (``--scale smoke``), as absl reads
    it, unless the flag is a boolean."""
    booleans = boolean_flags()
    positional, rest = [], [argv[0]]
    value_next = False
    for arg in argv[1:]:
        if value_next or arg.startswith("-"):
            name = arg.lstrip("-")
            value_next = (
                not value_next
                and arg.startswith("--")
                and "=" not in arg
                and arg not in launch.HELP_ARGS
                and name not in booleans
                and not (name.startswith("no") and name[2:] in booleans)
            )
            rest.append(arg)
        else:
            positional.append(arg)
    if not any(a.startswith("--workdir") for a in rest):
        rest.append(f"--workdir={DEFAULT_WORKDIR}")
    if len(positional) > 1:
        raise ValueError(f"give one claim (or 'all'), got {' '.join(positional)}")
    return (positional[0] if positional else None), rest


def main(argv: list[str] | None = None) -> int:
    """Runs the command on ``argv`` (default: the command line); returns the exit status."""
    argv = list(sys.argv if argv is None else argv)
    try:
        claim, rest = split_claim(argv)
    except ValueError as error:
        print(f"{NAME}: error: {error}", file=sys.stderr)
        return launch.ERROR_EXIT_CODE
    if claim is None and not any(a in launch.HELP_ARGS for a in rest):
        print(f"{NAME}: error: name a claim or 'all' (see --help)", file=sys.stderr)
        return launch.ERROR_EXIT_CODE

    def run(context: launch.Launch):
        from benchmarks import claims  # noqa: PLC0415 - JAX loads after the flags parse

        values = context.flags
        if context.overrides:
            raise ValueError("--config.* overrides are not taken: a claim's settings are fixed")
        scale, data_dir = values["scale"].value, claims.checked_data_dir(values["data_dir"].value)
        unused = claims.unused_data_dir(claim, scale, data_dir)
        context.note([unused] if unused else [])
        options = {**context.run_options(), "show_progress": values["progress"].value}
        try:
            results = claims.run_claims(
                claim,
                context.workdir,
                scale=scale,
                seeds=values["seeds"].value,
                run_options=options,
                dry_run=values["dry_run"].value,
                data_dir=data_dir,
            )
        except claims.base.ClaimStopped as stopped:
            if stopped.result is None:  # the stop arrived as a claim finished
                context.stopped_between_runs(f"claim {stopped.after}", "claim")
                return []
            if stopped.result.completed:  # the stop arrived as a run finished
                context.stopped_between_runs(stopped.result.workdir)
            return [stopped.result]
        if results:
            print(claims.summary_text(results))
        return []

    return launch.main(NAME, __doc__, define_flags, run, None, rest)


if __name__ == "__main__":
    launch.exit_after(main())
