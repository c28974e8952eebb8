"""NaP's sequential ALE: Rainbow / Rainbow + LayerNorm / Rainbow + LayerNorm + NaP on a sequence.

Lyle et al. 2024 (NaP), docs/algorithms.md "Sequential Atari protocol": 10 Atari games played one
after another, 20M frames each, the sequence cycled twice (400M frames); with NaP the score on a
game's second visit is close to that of a freshly initialized network trained on it, while plain
Rainbow degrades. One arm per command (``:<scale>,<arm>``); each writes its own work dir:

* ``rainbow`` — DQN Zoo's Rainbow (`agents.configs`), Adam 6.25e-5, constant learning rate;
* ``rainbow_ln`` — the same with LayerNorm before every nonlinearity;
* ``rainbow_ln_nap`` — LayerNorm + NaP (hidden weights projected to their initial norm after every
  update) with NaP's sequential-ALE schedule: warm-up from 1e-8 to 6.25e-4 over 1,000 updates,
  cosine to 1e-6 at the end of the game, restarted at every switch
  (`plasticity.schedules.cosine_restarts`; the peak is 10x DQN Zoo's default).

Unconfirmed (the paper's text could not be checked; every item is a field of the config):

* the 10 games. `DEFAULT_GAMES` is a documented choice, not the paper's list: common Atari-57
  games (human-normalized scores exist) that Rainbow learns within 20M frames, from quick ones
  (Pong, Freeway, Boxing, Enduro) to slower ones, with different action sets so that the shared
  18-action head matters;
* the switch policy: replay and optimizer state are kept across switches here
  (``switch.flush_replay`` / ``switch.reset_optimizer`` False; the launcher's
  ``--flush_replay_at_switch`` / ``--reset_optimizer_at_switch`` change it);
* which arms use the restarted schedule: only the NaP arm here (NaP's recipe includes an explicit
  schedule, and a 10x learning rate without the projection is not what the baselines ran).

Every arm also trains one fresh network per game for one block (``evaluation.fresh_reference``):
the reference that tells forgetting from loss of plasticity, at half the sequence's cost again
(200M frames at paper scale); switch it off with ``--nofresh_reference``.

Commands (paper scale, one GPU host per arm; the default scale is ``smoke``)::

    python -m scripts.train_atari \\
        --experiment=benchmarks/configs/atari_sequence.py:paper,rainbow --workdir=runs/seq/rainbow
    python -m scripts.train_atari \\
        --experiment=benchmarks/configs/atari_sequence.py:paper,rainbow_ln \\
        --workdir=runs/seq/rainbow_ln
    python -m scripts.train_atari \\
        --experiment=benchmarks/configs/atari_sequence.py:paper,rainbow_ln_nap \\
        --workdir=runs/seq/rainbow_ln_nap

then point `notebooks/plasticity_diagnostics.ipynb` at the three work dirs (evaluation matrix,
visit scores against the fresh networks, weight norms, effective learning rates, dormant units).
Relaunching a command resumes it. ``--experiment.<field>=<value>`` (or ``--config.<field>``)
overrides any field, e.g. ``--experiment.env.num_envs=16`` on a 16-core host.

Expected cost at paper scale (not measured: no GPU was available when this was written): per arm
400M training frames (25M learner updates) plus 200M for the references, up to ~30M evaluation
frames, and a 1M-transition replay (~7 GB of frames on the accelerator, checkpointed with the
learner every 5M frames). DQN Zoo's single-game Rainbow (200M frames) is a multi-day job on one
GPU, so expect days to a couple of weeks per arm on one host; ``benchmarks/atari_throughput.py``
measures a host's frames/s (ETA = frames / rate).

Smoke scale (``:smoke``, the default; checks the plumbing on a CPU, learns nothing): the first
three games, 1,024 frames each, two cycles, `agents.configs.smoke_config`'s tiny network, a
512-transition replay, episodes cut at 400 frames (so that every evaluation finishes) and a
schedule warm-up of 8 updates, references included. A few minutes
on a 2-core CPU (most of it compilation, evaluation and emulator start-up)::

    python -m scripts.train_atari \\
        --experiment=benchmarks/configs/atari_sequence.py:smoke,rainbow_ln_nap \\
        --workdir=/tmp/seq_smoke/rainbow_ln_nap
"""

from __future__ import annotations

import ml_collections

from agents import configs

DEFAULT_GAMES = (
    "Pong",
    "Breakout",
    "Enduro",
    "Freeway",
    "Boxing",
    "SpaceInvaders",
    "Seaquest",
    "Qbert",
    "MsPacman",
    "Asterix",
)
ARMS = ("rainbow", "rainbow_ln", "rainbow_ln_nap")
SCALES = ("smoke", "paper")

# NaP's sequential-ALE schedule (docs/algorithms.md, "Sequential Atari protocol"): per game,
# 1e-8 -> 6.25e-4 over 1,000 updates, then a cosine to 1e-6 at the game's end.
NAP_PEAK_LEARNING_RATE = 6.25e-4
NAP_SCHEDULE = dict(init_value=1e-8, warmup_steps=1_000, end_value=1e-6)


def parse_arg(arg: str | None) -> tuple[str, str]:
    """'paper,rainbow_ln' -> ('paper', 'rainbow_ln'); defaults: smoke, rainbow_ln_nap.

    Anything else is a one-line ValueError naming the accepted values.
    """
    scale, arm = "smoke", "rainbow_ln_nap"
    for part in (part.strip() for part in (arg or "").split(",")):
        if not part:
            continue
        if part in SCALES:
            scale = part
        elif part in ARMS:
            arm = part
        else:
            raise ValueError(
                f"unknown atari_sequence argument {part!r}: expected a scale "
                f"({', '.join(SCALES)}) and/or an arm ({', '.join(ARMS)})"
            )
    return scale, arm


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The agent config of one arm at one scale, plus ``games`` and ``cycles`` of the sequence."""
    scale, arm = parse_arg(arg)
    if scale == "paper":
        config = configs.rainbow_config()
        config.frames_per_game = 20_000_000
        games, cycles = DEFAULT_GAMES, 2
        config.evaluation.every_frames = 5_000_000  # plus the matrix after every game
        config.diagnostics.every_frames = 1_000_000
        warmup_steps = NAP_SCHEDULE["warmup_steps"]
    else:
        config = configs.smoke_config("rainbow")
        config.frames_per_game = 1024
        games, cycles = DEFAULT_GAMES[:3], 2
        config.env.max_episode_frames = 400  # short episodes, so every evaluation scores
        config.evaluation.update(dict(every_frames=1024, episodes=2, max_frames=1000))
        config.diagnostics.update(dict(every_frames=512, batch_size=32))
        warmup_steps = 8
    config.games = games
    config.cycles = cycles
    config.env.full_action_space = True
    config.switch = ml_collections.ConfigDict(
        dict(flush_replay=False, reset_optimizer=False, restart_schedule=False)
    )
    config.evaluation.fresh_reference = True
    if arm in ("rainbow_ln", "rainbow_ln_nap"):
        config.network.norm = "layernorm"
    if arm == "rainbow_ln_nap":
        config.optimizer.nap.enabled = True
        config.optimizer.learning_rate = NAP_PEAK_LEARNING_RATE
        config.optimizer.schedule.update({**NAP_SCHEDULE, "warmup_steps": warmup_steps})
        config.switch.restart_schedule = True
    return config
