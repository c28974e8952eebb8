"""Trains DQN or Rainbow on Atari games from absl flags; results land in a work dir.

Usage::

    python -m scripts.train_atari --games=Pong --agent=rainbow --workdir=/tmp/pong \\
        [--frames_per_game=200000000] [--seed=0] [--norm=layernorm] [--nap] [--weight_decay=0] \\
        [--num_envs=8] [--config.learner.n_step=3 --config.replay.capacity=1000000 ...]

``--agent`` picks the preset of `agents.configs` (DQN Zoo's settings, counted in frames);
``--config.<field>=<value>`` overrides any field of it (see `agents.configs` for the fields).
Several games (``--games=Pong,Breakout``) are played one after another with the full 18-action
set. Relaunching the same command on the same work dir resumes from its last checkpoint. Bad input
(an unknown game, NaP without a norm, ...) ends with a one-line error and exit status 1.
"""

from __future__ import annotations

import sys

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from agents import configs

_GAMES = flags.DEFINE_list("games", ["Pong"], "Atari games played one after another.")
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
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")
_CONFIG = config_flags.DEFINE_config_dict(
    "config", configs.rainbow_config(), "Overrides of the agent preset's fields."
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
) -> ml_collections.ConfigDict:
    """The preset of ``agent`` with ``--config.*`` overrides, then the named flags, applied."""
    if "agent" in overrides:
        raise ValueError("choose the agent with --agent, not --config.agent")
    config = configs.get_config(agent)
    config.update_from_flattened_dict(dict(overrides))
    named = {
        "frames_per_game": frames_per_game,
        "seed": seed,
        "network.norm": norm,
        "optimizer.nap.enabled": nap,
        "optimizer.weight_decay": weight_decay,
        "env.num_envs": num_envs,
    }
    config.update_from_flattened_dict(
        {key: value for key, value in named.items() if value is not None}
    )
    configs.validate_config(config)
    return config


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        sys.exit(f"train_atari: error: unexpected arguments {argv[1:]}")
    if not _WORKDIR.value:
        sys.exit("train_atari: error: --workdir is required")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # checkpointing libraries log every save at INFO
    from agents import atari_loop  # after flag checks: importing JAX and ALE takes seconds
    from plasticity import runtime

    runtime.apply_runtime_defaults()

    try:
        config = build_config(
            _AGENT.value,
            config_flags.get_override_values(flags.FLAGS["config"]),
            frames_per_game=_FRAMES_PER_GAME.value,
            seed=_SEED.value,
            norm=_NORM.value,
            nap=_NAP.value,
            weight_decay=_WEIGHT_DECAY.value,
            num_envs=_NUM_ENVS.value,
        )
        blocks = atari_loop.make_game_blocks(_GAMES.value, config.frames_per_game)
        result = atari_loop.train(config, blocks, _WORKDIR.value, show_progress=_PROGRESS.value)
    except ValueError as error:
        sys.exit(f"train_atari: error: {error}")
    counters = result.counters
    last = result.evaluations[-1] if result.evaluations else {}
    print(
        f"done: {counters.frames:,} frames, {counters.updates:,} updates, "
        f"last evaluation return {last.get('return_mean')} ({last.get('game')}); "
        f"work dir {_WORKDIR.value}"
    )


if __name__ == "__main__":
    app.run(main)
