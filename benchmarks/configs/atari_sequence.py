"""NaP's sequential ALE: Rainbow / Rainbow + LayerNorm / Rainbow + LayerNorm + NaP on a sequence.

Lyle et al. 2024 (NaP; docs/algorithms.md, "Sequential Atari protocol"): 10 Atari games played one after another, 20M frames
each, the sequence cycled twice (400M frames); with NaP the score on a game's second visit is
close to that of a freshly initialized network trained on it, while plain Rainbow degrades.
Variants (``:<scale>,<variant>`` runs only the named ones; each writes ``<workdir>/<variant>``):

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
* which variants use the restarted schedule: only the NaP one here (NaP's recipe includes an
  explicit schedule, and a 10x learning rate without the projection is not what the baselines
  ran).

Every variant also trains one fresh network on each game after the first for one block
(``evaluation.fresh_reference``): the reference that tells forgetting from loss of plasticity, at
nearly half the sequence's cost again (180M frames at paper scale: the first game's reference is
the sequence's own first block); ``--nofresh_reference`` switches it off.

Commands (one GPU host per variant at paper scale; relaunching a command resumes it)::

    python -m scripts.train_atari --experiment=benchmarks/configs/atari_sequence.py:paper,rainbow \
        --workdir=runs/seq
    python -m scripts.train_atari \
        --experiment=benchmarks/configs/atari_sequence.py:paper,rainbow_ln_nap --workdir=runs/seq

then ``python -m scripts.report runs/seq/*`` (evaluation matrix, visit scores against the fresh
networks, weight norms, effective learning rates, dormant units). ``--config.<field>=<value>``
overrides any field, e.g. ``--config.env.num_envs=16`` on a 16-core host.

Expected cost at paper scale (not measured: no GPU was available when this was written): per
variant 400M training frames (25M learner updates) plus 180M for the references, up to ~110M
evaluation frames (224 evaluations of at most 500,000 frames), and a 1M-transition replay (~7 GB of
frames on the accelerator, checkpointed with the learner every 5M frames). DQN Zoo's single-game
Rainbow (200M frames) is a multi-day job on one GPU, so expect days to a couple of weeks per
variant on one host; ``benchmarks/atari_throughput.py`` measures a host's frames/s (ETA = frames /
rate).

``:smoke`` checks the plumbing on a CPU and learns nothing: the first three games, 1,024 frames
each, two cycles, `agents.configs.smoke_config`'s tiny network, a 512-transition replay, episodes
cut at 400 frames (so that every evaluation finishes) and a schedule warm-up of 8 updates,
references included, for the LN + NaP arm alone unless arms are named (``:smoke,rainbow``). The default scale is a CPU-sized version of the sequence: Pong and Breakout,
10,240 frames each, two cycles, the same tiny network and a 4,096-transition replay.
"""

from __future__ import annotations

import ml_collections

from agents import configs
from plasticity import config_tools

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
VARIANTS = ("rainbow", "rainbow_ln", "rainbow_ln_nap")
# A smoke check compiles one arm (2-core CPUs spend most of a smoke run compiling): LN + NaP, whose
# code paths hold the other arms' (a norm, the projection, the restarted schedule).
SMOKE_VARIANTS = ("rainbow_ln_nap",)

# NaP's sequential-ALE schedule (docs/algorithms.md, "Sequential Atari protocol"): per game, 1e-8 -> 6.25e-4 over 1,000
# updates, then a cosine to 1e-6 at the game's end.
NAP_PEAK_LEARNING_RATE = 6.25e-4


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The sequence with its three variants; ``arg``: a scale (smoke, the default CPU scale,
    paper) and, optionally, the variants to run."""
    scale, chosen, _ = config_tools.parse_config_arg(arg, VARIANTS)
    if scale == "paper":
        config = configs.rainbow_config()
        config.frames_per_game = 20_000_000
        config.games, config.cycles = DEFAULT_GAMES, 2
        config.evaluation.every_frames = 5_000_000  # plus the matrix after every game
        config.diagnostics.every_frames = 1_000_000
    else:
        config = configs.smoke_config("rainbow")
        config.frames_per_game = 1024
        config.games, config.cycles = DEFAULT_GAMES[:3], 2
        config.env.max_episode_frames = 400  # short, so every evaluation scores (raw returns only)
        config.evaluation.update(dict(every_frames=1024, episodes=2, max_frames=1000))
        config.diagnostics.update(dict(every_frames=512, batch_size=32))
        config.optimizer.schedule.warmup_steps = 8
        if scale == "default":  # a CPU scale: two games, longer blocks, a bigger replay
            config.games = DEFAULT_GAMES[:2]
            config.frames_per_game = 10_240
            config.replay.capacity = 4_096
            config.diagnostics.update(
                dict(every_frames=2_048, names=configs.DEFAULT_RL_DIAGNOSTICS)
            )
            config.evaluation.every_frames = config.frames_per_game  # the matrix after each block
    config.env.full_action_space = True
    config.evaluation.fresh_reference = True
    nap = dict(
        network=dict(norm="layernorm"),
        optimizer=dict(nap=dict(enabled=True), learning_rate=NAP_PEAK_LEARNING_RATE),
        switch=dict(restart_schedule=True),
    )
    config.variants = ml_collections.ConfigDict(
        dict(rainbow=dict(), rainbow_ln=dict(network=dict(norm="layernorm")), rainbow_ln_nap=nap)
    )
    config.variant_order = tuple(chosen) or (SMOKE_VARIANTS if scale == "smoke" else VARIANTS)
    return config
