"""Trains DQN or Rainbow on a MinAtar game sequence (gymnax) from flags; results land in a work dir.

Usage::

    python -m scripts.train_minatar --games=breakout,asterix,freeway,space_invaders \\
        --steps_per_game=100000 --cycles=2 --agent=rainbow --norm=layernorm --nap \\
        --restart_schedule_at_switch --workdir=/tmp/minatar --num_seeds=2 \\
        [--flush_replay_at_switch] [--reset_optimizer_at_switch] [--no_fresh_reference] \\
        [--config.replay.capacity=50000 --config.network.hidden_sizes='(256,)' ...]

    python -m scripts.train_minatar --experiment=benchmarks/configs/minatar_sequence.py \\
        --workdir=/tmp/minatar_sequence   # every arm of a published comparison, one work dir each

``--agent`` picks the MinAtar preset (`agents.minatar_loop.minatar_config`); ``--config.<field>``
overrides any of its fields. One MinAtar step is one frame. A sequence plays every game with
MinAtar's full 6-action set and observation planes padded to a common channel count. After every
block every game seen so far is evaluated (the evaluation matrix), and a fresh network trained on
each game alone gives the reference score. Relaunching the same command on the same work dir
resumes from its last checkpoint; on CPU the resumed run ends bit-identical to an uninterrupted
one. Bad input (an unknown game, NaP without a norm, ...) ends with a one-line error and exit
status 1.

* SIGTERM finishes the current chunk, writes its checkpoint and exits with status 0 (relaunch to
  resume; with ``--experiment`` the arms not yet started run on relaunch).
* A NaN/Inf learner loss or parameter stops the run with a one-line error naming the update, the
  metric, the seed and the game, exit status 3; the last good checkpoint stays the newest one.
* Seeds spread over this host's devices (``--config.run.mesh``: ``auto``, the default, uses every
  local device whose count divides ``--num_seeds``; ``seed:4``; ``none``): each device plays and
  learns its own seeds, so 8 GPUs run 8 seeds at the speed of one. The multi-process flags
  (``--coordinator_address``, ``--num_processes``, ``--process_id``, ``--distributed``) are
  accepted so that a cluster's launch line works unchanged, but a MinAtar run is one process:
  spread seeds or arms over hosts by giving each job its own ``--seed`` and work dir.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import ml_collections
from absl import flags, logging
from ml_collections import config_flags

NAME = "train_minatar"
ERROR_EXIT_CODE = 1


def define_flags(values: flags.FlagValues, argv: Sequence[str]) -> None:
    """The launcher's flags, on their own `FlagValues` (no clash with other launchers).

    ``argv`` is where the config flags look for their ``--config.*`` / ``--experiment.*``
    overrides (by default they would read ``sys.argv``).
    """
    from agents import minatar_loop  # noqa: PLC0415 - JAX loads here, after the cheap checks
    from plasticity import distributed  # noqa: PLC0415

    distributed.define_flags(values)

    flags.DEFINE_list(
        "games",
        list(minatar_loop.DEFAULT_SEQUENCE),
        "MinAtar games played one after another.",
        flag_values=values,
    )
    flags.DEFINE_integer(
        "steps_per_game", None, "Steps (= frames) per game block.", flag_values=values
    )
    flags.DEFINE_integer("cycles", 1, "Passes over the list of games.", flag_values=values)
    flags.DEFINE_enum("agent", "rainbow", ["dqn", "rainbow"], "Agent preset.", flag_values=values)
    flags.DEFINE_string(
        "workdir", None, "Work dir: config, metrics, checkpoints.", flag_values=values
    )
    flags.DEFINE_integer("num_seeds", None, "Seeds trained together.", flag_values=values)
    flags.DEFINE_integer(
        "seed", None, "First seed (seeds are seed, seed + 1, ...).", flag_values=values
    )
    flags.DEFINE_enum(
        "norm",
        None,
        ["none", "layernorm", "rmsnorm"],
        "Normalization before every nonlinearity.",
        flag_values=values,
    )
    flags.DEFINE_bool(
        "nap", None, "Normalize-and-Project (needs --norm=layernorm|rmsnorm).", flag_values=values
    )
    flags.DEFINE_float("weight_decay", None, "Decoupled weight decay.", flag_values=values)
    flags.DEFINE_integer("num_envs", None, "Environments per seed.", flag_values=values)
    flags.DEFINE_bool(
        "flush_replay_at_switch", None, "Empty the replay at game switches.", flag_values=values
    )
    flags.DEFINE_bool(
        "reset_optimizer_at_switch",
        None,
        "Zero the optimizer's moments at game switches.",
        flag_values=values,
    )
    flags.DEFINE_bool(
        "restart_schedule_at_switch",
        None,
        "Warm-up + cosine learning rate restarted at every switch (NaP's schedule).",
        flag_values=values,
    )
    flags.DEFINE_bool(
        "fresh_reference",
        None,
        "Also train a fresh network on each game alone (the evaluation matrix's reference).",
        flag_values=values,
    )
    flags.DEFINE_bool("progress", True, "Show a progress bar.", flag_values=values)
    config_flags.DEFINE_config_dict(
        "config",
        minatar_loop.minatar_config("rainbow"),
        "Overrides of the agent preset's fields.",
        flag_values=values,
        sys_argv=list(argv),
    )
    config_flags.DEFINE_config_file(
        "experiment",
        None,
        "A comparison config (e.g. benchmarks/configs/minatar_sequence.py): runs its arms.",
        flag_values=values,
        lock_config=False,
        sys_argv=list(argv),
    )


def build_config(agent: str, overrides: dict[str, Any], **named: Any) -> ml_collections.ConfigDict:
    """The MinAtar preset of ``agent`` with ``--config.*`` overrides, then the named flags.

    ``named`` keys: steps_per_game, seed, num_seeds, norm, nap, weight_decay, num_envs,
    flush_replay_at_switch, reset_optimizer_at_switch, restart_schedule_at_switch,
    fresh_reference; None leaves the preset's value.
    """
    from agents import minatar_loop  # noqa: PLC0415

    if "agent" in overrides:
        raise ValueError("choose the agent with --agent, not --config.agent")
    config = minatar_loop.minatar_config(agent)
    config.update_from_flattened_dict(dict(overrides))
    fields = {
        "steps_per_game": "frames_per_game",
        "seed": "seed",
        "num_seeds": "num_seeds",
        "norm": "network.norm",
        "nap": "optimizer.nap.enabled",
        "weight_decay": "optimizer.weight_decay",
        "num_envs": "env.num_envs",
        "flush_replay_at_switch": "switch.flush_replay",
        "reset_optimizer_at_switch": "switch.reset_optimizer",
        "restart_schedule_at_switch": "switch.restart_schedule",
        "fresh_reference": "evaluation.fresh_reference",
    }
    unknown = set(named) - set(fields)
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}")
    config.update_from_flattened_dict(
        {fields[name]: value for name, value in named.items() if value is not None}
    )
    minatar_loop.validate_minatar_config(config)
    return config


def run(
    config: ml_collections.ConfigDict,
    games: Sequence[str],
    cycles: int,
    workdir: str,
    progress: bool = True,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[str, Any]:
    """Trains (or resumes) one run: (a one-paragraph summary of its scores, the `RunResult`)."""
    from agents import minatar_loop, sequence  # noqa: PLC0415

    blocks = minatar_loop.make_blocks(games, config.frames_per_game, cycles)
    result = minatar_loop.train(
        config, blocks, workdir, show_progress=progress, should_stop=should_stop
    )
    if result.preempted:
        return f"stopped: {workdir} (a checkpoint holds where it stood)", result
    from plasticity.workdir import read_metrics  # noqa: PLC0415

    rows = read_metrics(workdir)
    summary = sequence.visit_summary(
        [r for r in rows if r.get("event") == "eval"],
        [r for r in rows if r.get("event") == "eval_fresh"],
    )
    lines = [f"done: {workdir} ({'complete' if result.completed else 'stopped'})"]
    for game, scores in summary.items():
        cells = ", ".join(f"{name} {value:.2f}" for name, value in sorted(scores.items()))
        lines.append(f"  {game}: {cells}")
    return "\n".join(lines), result


def _named(values: flags.FlagValues) -> dict[str, Any]:
    names = (
        "steps_per_game",
        "seed",
        "num_seeds",
        "norm",
        "nap",
        "weight_decay",
        "num_envs",
        "flush_replay_at_switch",
        "reset_optimizer_at_switch",
        "restart_schedule_at_switch",
        "fresh_reference",
    )
    return {name: values[name].value for name in names}


def _experiment_runs(values: flags.FlagValues, workdir: str):
    """(work dir, config, games, cycles) of every arm of ``--experiment``."""
    experiment = values["experiment"].value
    runs = []
    for arm in experiment.arm_order:
        overrides = {
            **_flatten(experiment.overrides.to_dict()),
            **_flatten(experiment.arms[arm].to_dict()),
        }
        agent = overrides.pop("agent", experiment.agent)
        named = {k: v for k, v in _named(values).items() if v is not None}
        named.setdefault("steps_per_game", experiment.steps_per_game)
        named.setdefault("num_seeds", experiment.num_seeds)
        config = build_config(agent, overrides, **named)
        runs.append((str(Path(workdir) / arm), config, list(experiment.games), experiment.cycles))
    return runs


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def main(argv: Sequence[str]) -> int:
    """Parses ``argv`` (program name first), trains, prints a summary; returns the exit status."""
    values = flags.FlagValues()
    try:
        define_flags(values, argv)
        if any(arg in ("--help", "-h", "--helpfull") for arg in argv[1:]):
            print(__doc__ + "\n" + values.get_help())
            return 0
        rest = values(list(argv))
    except (flags.Error, ValueError) as error:
        return _error(error)
    if len(rest) > 1:
        return _error(f"unexpected arguments {rest[1:]}")
    if not values["workdir"].value:
        return _error("--workdir is required")
    logging.set_verbosity(logging.WARNING)  # checkpointing libraries log every save at INFO
    import jax  # noqa: PLC0415

    from plasticity import distributed, divergence, preemption  # noqa: PLC0415

    try:
        distributed.initialize_from_flags(values)  # first: before anything runs on a device
    except ValueError as error:
        return _error(error)
    if jax.process_count() > 1:
        return _error(
            f"a MinAtar run is one process (this job has {jax.process_count()}): launch each "
            "seed or arm as its own job (--seed, --workdir), or use the continual trainer"
        )
    try:
        workdir = values["workdir"].value
        if values["experiment"].value is not None:
            runs = _experiment_runs(values, workdir)
        else:
            config = build_config(
                values["agent"].value,
                config_flags.get_override_values(values["config"]),
                **_named(values),
            )
            runs = [(workdir, config, values["games"].value, values["cycles"].value)]
        from agents import minatar_loop  # noqa: PLC0415

        for _, _, games, _ in runs:  # every game name is checked before anything runs
            for game in games:
                minatar_loop.resolve_minatar_game(game)
        with preemption.PreemptionGuard() as guard:
            for path, config, games, cycles in runs:
                summary, result = run(
                    config, games, cycles, path, values["progress"].value, guard.should_stop
                )
                print(summary)
                if result.preempted:
                    print(
                        f"{NAME}: stopped by {guard.signal_name or 'a signal'} after a checkpoint "
                        "(relaunch to resume)",
                        file=sys.stderr,
                    )
                    return 0
    except ValueError as error:
        return _error(error)
    except divergence.DivergenceError as error:
        _error(error)
        return divergence.DIVERGENCE_EXIT_CODE
    return 0


def _error(error: object) -> int:
    """Prints the one-line error and returns the exit status for bad input."""
    print(f"{NAME}: error: {error}".splitlines()[0], file=sys.stderr)
    return ERROR_EXIT_CODE


if __name__ == "__main__":
    sys.exit(main(sys.argv))
