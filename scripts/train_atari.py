"""Trains DQN or Rainbow on Atari games and game sequences from absl flags, into a work dir.

Usage::

    python -m scripts.train_atari --games=Pong --agent=rainbow --workdir=/tmp/pong \\
        [--frames_per_game=200000000] [--seed=0] [--norm=layernorm] [--nap] [--weight_decay=0] \\
        [--num_envs=8] [--config.learner.n_step=3 --config.replay.capacity=1000000 ...]

    # NaP's sequential ALE: games played one after another, the list cycled
    python -m scripts.train_atari --games=Pong,Breakout,Enduro --frames_per_game=20000000 \\
        --cycles=2 --agent=rainbow --norm=layernorm --nap --restart_schedule_at_switch \\
        --fresh_reference --workdir=/tmp/seq

    # a published experiment (one arm per command; see the file's docstring)
    python -m scripts.train_atari \\
        --experiment=benchmarks/configs/atari_sequence.py:paper,rainbow_ln_nap --workdir=/tmp/nap

``--agent`` picks the preset of `agents.configs` (DQN Zoo's settings, counted in frames);
``--config.<field>=<value>`` overrides any field of it (see `agents.configs` for the fields).
``--experiment`` starts from a config file instead (its ``games`` and ``cycles`` included); the
named flags, when given, and ``--config.*`` override it.

Sequences (`agents.atari_loop`): several games play one after another with the full 18-action
set, so one head serves every game; ``--cycles`` repeats the list. At every switch the episodes in
flight are cut, and, as the switch flags say (all off by default; the paper's choice is
unconfirmed): ``--flush_replay_at_switch`` empties the replay (learning waits until it refills),
``--reset_optimizer_at_switch`` zeroes the optimizer's moments (Adam's bias correction starts
again), ``--restart_schedule_at_switch`` restarts a warm-up + cosine learning-rate schedule at
every game: ``optimizer.schedule.init_value`` -> ``optimizer.learning_rate`` over
``schedule.warmup_steps`` updates -> ``schedule.end_value`` at the game's end (NaP used 1e-8,
6.25e-4, 1,000, 1e-6; the sequence preset's defaults are the same except the peak, the agent's
own learning rate; ``--config.optimizer.learning_rate=6.25e-4`` sets NaP's). After every game
every game seen so far is evaluated (the evaluation matrix, ``evaluation_matrix.json``);
``--fresh_reference`` then also trains one fresh network per game for one block (under
``<workdir>/fresh/``), the reference that tells forgetting from loss of plasticity (it costs one
more block per game). Every metrics row carries frames, game, visit and cycle.

Relaunching the same command on the same work dir resumes from its last checkpoint (learner,
optimizer, replay, counters and RNG; the emulators start new episodes). Bad input (an unknown
game, NaP without a norm, ...) ends with a one-line error and exit status 1.

* SIGTERM (a preemption, the end of a time slice) finishes the loop iteration in flight, writes a
  checkpoint and exits with status 0 after the line ``train_atari: stopped by SIGTERM after a
  checkpoint (relaunch to resume)``; relaunching the same command resumes there.
* A NaN/Inf learner loss or parameter stops the run with the one-line error ``train_atari: error:
  divergence at step <update>: loss is nan (game ..., seed ..., frame ...); last good checkpoint
  kept: ...`` and exit status 3 (not worth retrying); the diverged state is never saved, so the
  last good checkpoint stays the newest.
* The multi-process flags (``--coordinator_address``, ``--num_processes``, ``--process_id``,
  ``--distributed``) are accepted so that a cluster's launch line works, but an Atari run is one
  process (its emulators and learner are driven by one host): a job of several processes stops
  with a one-line error. Run each seed or game sequence as its own job with its own work dir; the
  continual trainer (``scripts.train_continual``) spans hosts.
"""

from __future__ import annotations

import sys

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from agents import configs
from plasticity import distributed

# NaP's sequential-ALE schedule shape (docs/algorithms.md, "Sequential Atari protocol"); the
# peak is the agent's learning rate.
SEQUENCE_SCHEDULE = dict(init_value=1e-8, warmup_steps=1_000, end_value=1e-6)
SWITCH_FLAGS = {
    "flush_replay_at_switch": "flush_replay",
    "reset_optimizer_at_switch": "reset_optimizer",
    "restart_schedule_at_switch": "restart_schedule",
}


def with_sequence_fields(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """An agent preset with the fields a sequence reads, where missing: ``switch`` (all off),
    ``evaluation.fresh_reference`` (off) and NaP's warm-up/end values for a restarted schedule
    (used only when ``switch.restart_schedule`` is on)."""
    if "switch" not in config:
        config.switch = ml_collections.ConfigDict({field: False for field in SWITCH_FLAGS.values()})
        if config.optimizer.schedule.name == "constant":
            config.optimizer.schedule.update(SEQUENCE_SCHEDULE)
    if "fresh_reference" not in config.evaluation:
        config.evaluation.fresh_reference = False
    return config


_GAMES = flags.DEFINE_list("games", ["Pong"], "Atari games played one after another.")
_CYCLES = flags.DEFINE_integer("cycles", None, "Times the list of games is played (default 1).")
_AGENT = flags.DEFINE_enum("agent", "rainbow", list(configs.AGENTS), "Agent preset.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Work dir: config, metrics, checkpoints.")
_FRAMES_PER_GAME = flags.DEFINE_integer(
    "frames_per_game", None, "Training frames per game (default: the preset's)."
)
_SEED = flags.DEFINE_integer("seed", None, "Seed of network, replay sampling and emulators.")
_NORM = flags.DEFINE_enum(
    "norm", None, ["none", "layernorm", "rmsnorm"], "Normalization before every nonlinearity."
)
_NAP = flags.DEFINE_bool("nap", None, "Normalize-and-Project (needs --norm=layernorm|rmsnorm).")
_WEIGHT_DECAY = flags.DEFINE_float("weight_decay", None, "Decoupled weight decay coefficient.")
_NUM_ENVS = flags.DEFINE_integer("num_envs", None, "Emulators stepped in parallel.")
_FLUSH_REPLAY = flags.DEFINE_bool(
    "flush_replay_at_switch", None, "Empty the replay at every game switch (default off)."
)
_RESET_OPTIMIZER = flags.DEFINE_bool(
    "reset_optimizer_at_switch", None, "Zero the optimizer's moments at every switch (default off)."
)
_RESTART_SCHEDULE = flags.DEFINE_bool(
    "restart_schedule_at_switch",
    None,
    "Warm-up + cosine learning rate restarted at every game (default off: constant).",
)
_FRESH_REFERENCE = flags.DEFINE_bool(
    "fresh_reference",
    None,
    "Also train a fresh network per game for one block: the plasticity reference (default off).",
)
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")
_CONFIG = config_flags.DEFINE_config_dict(
    "config",
    with_sequence_fields(configs.rainbow_config()),
    "Overrides of the agent preset's fields.",
)
_EXPERIMENT = config_flags.DEFINE_config_file(
    "experiment",
    None,
    "Experiment config file (e.g. benchmarks/configs/atari_sequence.py:paper,rainbow_ln_nap).",
)
distributed.define_flags()


def multi_process_error(process_count: int) -> str | None:
    """The one-line refusal of a job of ``process_count`` processes (None for one process)."""
    if process_count <= 1:
        return None
    return (
        f"multi-process Atari is not supported (this job has {process_count} processes): the "
        "loop's emulators and learner are driven by one host; launch each seed or sequence as "
        "its own single-process job with its own --workdir, or use scripts.train_continual "
        "for multi-host jobs"
    )


def build_config(
    agent: str,
    overrides: dict,
    *,
    frames_per_game: int | None = None,
    seed: int | None = None,
    norm: str | None = None,
    nap: bool | None = None,
    weight_decay: float | None = None,
    num_envs: int | None = None,
    flush_replay_at_switch: bool | None = None,
    reset_optimizer_at_switch: bool | None = None,
    restart_schedule_at_switch: bool | None = None,
    fresh_reference: bool | None = None,
    base: ml_collections.ConfigDict | None = None,
) -> ml_collections.ConfigDict:
    """The preset of ``agent`` (or ``base``) with ``--config.*`` overrides, then the named flags.

    Arguments left None keep the config's value.
    """
    if "agent" in overrides:
        raise ValueError("choose the agent with --agent, not --config.agent")
    config = configs.get_config(agent) if base is None else ml_collections.ConfigDict(base)
    config = with_sequence_fields(config)
    config.update_from_flattened_dict(dict(overrides))
    named = {
        "frames_per_game": frames_per_game,
        "seed": seed,
        "network.norm": norm,
        "optimizer.nap.enabled": nap,
        "optimizer.weight_decay": weight_decay,
        "env.num_envs": num_envs,
        "switch.flush_replay": flush_replay_at_switch,
        "switch.reset_optimizer": reset_optimizer_at_switch,
        "switch.restart_schedule": restart_schedule_at_switch,
        "evaluation.fresh_reference": fresh_reference,
    }
    config.update_from_flattened_dict(
        {key: value for key, value in named.items() if value is not None}
    )
    configs.validate_config(config)
    return config


def split_experiment(
    experiment: ml_collections.ConfigDict,
) -> tuple[ml_collections.ConfigDict, list[str], int]:
    """(agent config, games, cycles) of an experiment config file's ConfigDict."""
    fields = experiment.to_dict()
    missing = [name for name in ("agent", "games") if name not in fields]
    if missing:
        raise ValueError(f"the experiment config has no {' or '.join(missing)} field")
    games = [str(game) for game in fields.pop("games")]
    cycles = int(fields.pop("cycles", 1))
    return ml_collections.ConfigDict(fields), games, cycles


def main(argv: list[str]) -> int:
    """Trains (or resumes) the run the parsed flags describe; returns the exit status (0 done or
    preempted, 3 diverged; bad input exits with status 1 and a one-line error)."""
    if len(argv) > 1:
        sys.exit(f"train_atari: error: unexpected arguments {argv[1:]}")
    if not _WORKDIR.value:
        sys.exit("train_atari: error: --workdir is required")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # checkpointing libraries log every save at INFO
    try:
        distributed.initialize_from_flags()  # first: before anything runs on a device
    except ValueError as error:
        sys.exit(f"train_atari: error: {error}")
    refusal = multi_process_error(jax.process_count())
    if refusal is not None:
        sys.exit(f"train_atari: error: {refusal}")
    from agents import atari_loop  # after flag checks: importing ALE, Flax and Orbax takes seconds
    from plasticity import divergence, preemption, runtime

    runtime.apply_runtime_defaults()

    try:
        agent, base, games, cycles = _AGENT.value, None, _GAMES.value, 1
        if _EXPERIMENT.value is not None:
            base, experiment_games, cycles = split_experiment(_EXPERIMENT.value)
            if flags.FLAGS["agent"].present and _AGENT.value != base.agent:
                raise ValueError(
                    f"--agent={_AGENT.value} contradicts the experiment's agent {base.agent}"
                )
            agent = base.agent
            if not flags.FLAGS["games"].present:
                games = experiment_games
        if _CYCLES.value is not None:
            cycles = _CYCLES.value
        config = build_config(
            agent,
            config_flags.get_override_values(flags.FLAGS["config"]),
            frames_per_game=_FRAMES_PER_GAME.value,
            seed=_SEED.value,
            norm=_NORM.value,
            nap=_NAP.value,
            weight_decay=_WEIGHT_DECAY.value,
            num_envs=_NUM_ENVS.value,
            flush_replay_at_switch=_FLUSH_REPLAY.value,
            reset_optimizer_at_switch=_RESET_OPTIMIZER.value,
            restart_schedule_at_switch=_RESTART_SCHEDULE.value,
            fresh_reference=_FRESH_REFERENCE.value,
            base=base,
        )
        blocks = atari_loop.make_game_blocks(games, config.frames_per_game, cycles)
        with preemption.PreemptionGuard() as guard:
            result = atari_loop.train_sequence(
                config,
                blocks,
                _WORKDIR.value,
                show_progress=_PROGRESS.value,
                should_stop=guard.should_stop,
            )
    except ValueError as error:
        sys.exit(f"train_atari: error: {error}")
    except divergence.DivergenceError as error:
        print(f"train_atari: error: {error}", file=sys.stderr)
        return divergence.DIVERGENCE_EXIT_CODE
    if result.preempted:
        print(
            f"train_atari: stopped by {guard.signal_name or 'SIGTERM'} after a checkpoint "
            f"(relaunch to resume); work dir {_WORKDIR.value}",
            file=sys.stderr,
        )
        return 0
    counters = result.run.counters
    last = next(
        (row for row in reversed(result.run.evaluations) if row["game"] == row["trained_game"]), {}
    )
    print(
        f"done: {counters.frames:,} frames, {counters.updates:,} updates, "
        f"last evaluation return {last.get('return_mean')} ({last.get('game')}); "
        f"{len(blocks)} blocks, {len(result.fresh)} fresh references; work dir {_WORKDIR.value}"
    )
    return 0


if __name__ == "__main__":
    app.run(main)
