"""The flag vocabulary and the run of both RL launchers (`scripts.train_atari`, `scripts.train_minatar`).

Same flags, same meanings: ``--games``, ``--cycles``, ``--frames_per_game``, ``--agent``,
``--norm``, ``--nap``, ``--weight_decay``, ``--seed``, ``--num_seeds``, ``--num_envs``,
``--fresh_reference`` (on by default in both), the three switch flags, ``--experiment=FILE[:ARGS]``
(a published config; its variants run one after another, each in ``<workdir>/<variant>``;
``:ARGS`` picks the scale and, optionally, the variants) and ``--config.<field>=<value>``. Named
flags and overrides win over the experiment file and every variant (a ``note:`` line names each
variant whose own value they replace). The rest of the launcher contract is `plasticity.launch`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from absl import flags

from agents import configs
from plasticity import launch, layers

FRAME_HELP = {
    "atari": "Training frames per game block (one agent step is env.frame_skip = 4 frames).",
    "minatar": "Training frames per game block (for MinAtar a frame is one environment step).",
}


def define_flags(values: flags.FlagValues, family: str) -> None:
    """The RL flags of ``family`` ('atari' or 'minatar') on ``values``."""
    flags.DEFINE_list("games", None, "Games played one after another.", flag_values=values)
    flags.DEFINE_integer("cycles", None, "Times the list of games is played.", flag_values=values)
    flags.DEFINE_integer("frames_per_game", None, FRAME_HELP[family], flag_values=values)
    flags.DEFINE_enum("agent", None, list(configs.AGENTS), "Agent preset.", flag_values=values)
    flags.DEFINE_enum(
        "norm",
        None,
        list(layers.NORMS),
        "Normalization before every nonlinearity.",
        flag_values=values,
    )
    flags.DEFINE_bool("nap", None, "Normalize-and-Project (needs a --norm).", flag_values=values)
    flags.DEFINE_float("weight_decay", None, "Decoupled weight decay.", flag_values=values)
    flags.DEFINE_integer(
        "seed", None, "First seed (seeds are seed, seed + 1, ...).", flag_values=values
    )
    flags.DEFINE_integer(
        "num_seeds",
        None,
        "Seeds (MinAtar: trained together; Atari: one run each, in seed_<s> sub-work-dirs).",
        flag_values=values,
    )
    flags.DEFINE_integer("num_envs", None, "Environments per seed.", flag_values=values)
    flags.DEFINE_bool(
        "fresh_reference",
        None,
        "Also train a fresh network on each game after the first for one block (the first "
        "game's is the sequence's first block): the reference a revisit is compared with "
        "(default on; --nofresh_reference switches it off).",
        flag_values=values,
    )
    flags.DEFINE_bool(
        "flush_replay_at_switch", None, "Empty the replay at every game switch.", flag_values=values
    )
    flags.DEFINE_bool(
        "reset_optimizer_at_switch",
        None,
        "Zero the optimizer's moments at every game switch.",
        flag_values=values,
    )
    flags.DEFINE_bool(
        "restart_schedule_at_switch",
        None,
        "Warm-up + cosine learning rate restarted at every game (NaP's sequential schedule; leave "
        "optimizer.schedule.name 'constant').",
        flag_values=values,
    )
    flags.DEFINE_string(
        "experiment",
        None,
        f"Experiment config FILE[:ARGS], e.g. benchmarks/configs/{family}_sequence.py:smoke.",
        flag_values=values,
    )


def config_of(
    values: flags.FlagValues,
    overrides: dict[str, str],
    family: str,
    replaced: list[str] | None = None,
):
    """The launch's config (`agents.configs.build_config`, which lists in ``replaced`` the
    variants' values the command line replaced) from parsed flags."""
    named = {name: values[name].value for name in configs.NAMED_FLAGS}
    return configs.build_config(
        family, values["agent"].value, values["experiment"].value, overrides, named, replaced
    )


def run(
    context: launch.Launch,
    family: str,
    train: Callable[..., Any],
    plan: Callable[[Any], Any] | None = None,
) -> list[Any]:
    """Every run of the launch (`agents.configs.expand_runs`), validated, and planned by ``plan``
    (the loop's `plan_run`: learning plan, schedule, memory), before the first starts.

    On one process the runs go one after another, stopping after a run that was stopped
    (preempted or early), or before the next run when a stop request arrived as one finished
    (during its last chunk or final evaluation). In a multi-process job
    (`plasticity.distributed`), MinAtar lays its seeds out over every device of every process
    (one run, `agents.minatar_loop.seed_mesh`), while Atari, whose emulators live on hosts,
    gives process i the runs i, i + P, ... (seeds and variants, each an independent run in its
    own sub-work-dir, stopped by a signal to that process alone) and waits for every process at
    the end; process 0 then writes the combined ``evaluation_matrix.json`` of all runs.
    """
    import jax  # noqa: PLC0415

    from plasticity import distributed  # noqa: PLC0415

    replaced = []
    config = config_of(context.flags, context.overrides, family, replaced)
    runs = configs.expand_runs(config, family, context.workdir)
    several = len(runs) > 1
    for workdir, run_config in runs if plan is not None else ():
        try:
            plan(run_config)
        except ValueError as error:
            where = Path(workdir).relative_to(context.workdir)
            raise ValueError(f"{where}: {error}" if several else str(error)) from None
    context.note(replaced)
    options = context.run_options()
    processes = jax.process_count()
    if family == "atari" and processes > 1:
        if len(runs) < processes:
            raise ValueError(
                f"this job has {processes} processes but {len(runs)} Atari run(s): each process "
                "trains whole runs (seeds, variants); ask for at least as many (--num_seeds)"
            )
        runs = runs[jax.process_index() :: processes]
        options.update(should_stop=context.local_stop_requested, independent=True)
    distributed.agree_to_start()  # every process planned its runs: none refused them
    results = []
    for index, (workdir, run_config) in enumerate(runs):
        if several:  # the harness's lines say which run they are about
            options["label"] = str(Path(workdir).relative_to(context.workdir))
        result = train(run_config, workdir, name=context.name, **options)
        results.append(result)
        if not result.completed:
            break
        if index + 1 < len(runs) and options["should_stop"]():  # arrived as the run finished
            context.stopped_between_runs(workdir)
            break
    if family == "atari" and processes > 1:
        distributed.barrier("atari_runs_done")
    if several:
        write_combined_matrix(context.workdir, config, family)
        if family == "atari" and len(results) == len(runs) and all(r.completed for r in results):
            results[-1].outputs["launch_summary"] = across_seeds_lines(context.workdir, config)
    return results


def across_seeds_lines(workdir: str, config) -> list[str]:
    """'rainbow: pong: visit_1 ... (return_mean, mean over 3 seeds)': the summary of every Atari
    variant trained with several seeds (one run each), from all its seeds' rows, which process
    0 prints after the runs' own lines."""
    import jax  # noqa: PLC0415

    from agents.atari_loop import MATRIX_KEYS  # noqa: PLC0415
    from agents.driver import summary_lines  # noqa: PLC0415
    from plasticity.workdir import read_metrics  # noqa: PLC0415

    if jax.process_index() != 0:
        return []
    by_variant: dict[Path, list[dict]] = {}
    for path, run_config in configs.expand_runs(config, "atari", workdir):
        if run_config.num_seeds == 1 and Path(path).name.startswith("seed_"):
            by_variant.setdefault(Path(path).parent, []).extend(read_metrics(path))
    lines = []
    for variant, rows in by_variant.items():
        label = variant.relative_to(workdir).as_posix()
        prefix = f"{label}: " if label != "." else ""
        lines += [prefix + line for line in summary_lines(rows, MATRIX_KEYS[0])]
    return lines


def write_combined_matrix(workdir: str, config, family: str) -> None:
    """``<workdir>/evaluation_matrix.json``: {run: its evaluation_matrix.json} for every run of
    a launch with several (variants, seeds), written by process 0 from the runs' own files."""
    import json  # noqa: PLC0415

    import jax  # noqa: PLC0415

    from agents.evaluation_matrix import EVALUATION_MATRIX_FILE  # noqa: PLC0415

    if jax.process_index() != 0:
        return
    combined = {}
    for path, _ in configs.expand_runs(config, family, workdir):
        own = Path(path) / EVALUATION_MATRIX_FILE
        if own.exists():
            combined[str(Path(path).relative_to(workdir))] = json.loads(own.read_text())
    target = Path(workdir) / EVALUATION_MATRIX_FILE
    temporary = target.with_suffix(".tmp")
    temporary.write_text(json.dumps({"runs": combined}, indent=1) + "\n", encoding="utf-8")
    temporary.replace(target)
