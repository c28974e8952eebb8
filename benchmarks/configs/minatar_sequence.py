"""Rainbow vs Rainbow + LayerNorm vs Rainbow + LayerNorm + NaP on a MinAtar game sequence.

NaP's sequential-ALE experiment (Lyle et al. 2024; docs/algorithms.md, "Sequential Atari protocol") at CPU scale: games played one
after another, the sequence cycled twice, one network throughout; after every block every game
seen so far is evaluated (the evaluation matrix), and a fresh network trained on each game alone
for one block gives the reference a revisit is compared with.

Default scale: breakout then space_invaders, 2 cycles of 20,000 steps a game (4 blocks) plus
space_invaders' fresh reference (breakout's is the first block), one seed, 8 envs, one update every
4 steps (5,000 updates a block). Variants (``:rainbow_ln`` etc. runs only the named ones):

* ``rainbow``: the MinAtar Rainbow preset (`agents.configs.minatar_preset`: C51, dueling,
  double Q, 3-step returns, prioritized replay, Adam 1e-4) **without noisy nets**, exploring
  epsilon-greedily (1 -> 0.01 over 10,000 frames): noisy layers with per-example noise triple the
  cost of an update on a CPU. ``:noisy`` restores them.
* ``rainbow_ln``: LayerNorm before every nonlinearity.
* ``rainbow_ln_nap``: LayerNorm + NaP (hidden kernels, and the (γ, β) that a following norm makes
  scale invariant, projected to their initial norm after every update) + the learning rate warmed up and cosine-decayed anew at every switch,
  peaking at 10x the baseline's rate as in the paper's sequential ALE (1e-8 -> 1e-3 over 500
  updates -> 1e-6).

Switch policy for every arm: replay and optimizer kept (the paper's choice is unconfirmed).

Command (each variant writes ``<workdir>/<variant>``; relaunching resumes)::

    python -m scripts.train_minatar --experiment=benchmarks/configs/minatar_sequence.py \\
        --workdir=/tmp/minatar_sequence

then write the figures and the HTML page with ``python -m scripts.report /tmp/minatar_sequence``
(the three variant work dirs side by side), or open the diagnostics notebook on that directory.

Expected runtime on a 2-core CPU: about 6 minutes for the three arms (5 blocks of 20,000 frames
an arm at ~1,000 frames/s, plus compilation; the reference reuses the sequence's compiled
programs). Measured 6 min 26 s on a quiet 2-core AMD EPYC VM when breakout's reference was still
trained on its own (6 blocks an arm).

Result measured with that command (seed 0; mean return over 8 evaluation episodes; visit k = the
game's score right after its k-th block, fresh = a new network trained on the game alone for one
block, from the same initial parameters)::

    arm              breakout: visit 1  visit 2  fresh   space_invaders: visit 1  visit 2  fresh
    rainbow                    3.88     3.00     3.88                   21.12    17.50     7.12
    rainbow_ln                 4.12     3.50     4.12                   13.88    25.75    10.00
    rainbow_ln_nap             2.62     5.25     2.62                   17.12    39.25    15.00

(measured on a 2-core Intel Xeon VM; an earlier version, whose importance-exponent anneal
stopped at 0.9925, gave 13.5 to 30.6 at space invaders' first visit). Every arm learns both
games (a uniformly random policy scores 0.56 on breakout and 2.84 on space invaders over 32
episodes); at space invaders' second visit LayerNorm + NaP scores highest (39.3, against 17.5
and 25.8), while on breakout the arms are within an episode's noise. NaP holds every hidden
kernel at its initial norm while the baseline's grow by 10-35 % from the first diagnostics to
the end (the notebook's weight-norm figure: ``notebooks/plasticity_diagnostics.ipynb`` on the
three work dirs), and with NaP the learning rate is 1e-8 right after each switch (the 'switch'
rows). At this scale (20,000 steps a game, one seed, 8 episodes an evaluation) no loss of
plasticity shows beyond noise: every revisit of space invaders beats its fresh network, and on
breakout those of Rainbow and Rainbow + LN score a little below theirs (3.00 and 3.50 against
3.88 and 4.12; the breakout reference equals the first visit by construction: it replays the
sequence's first block). The paper's effect needs far longer blocks
(20M frames a game); the ``:paper`` scale is the starting point for that on a GPU.

``:smoke`` shrinks everything to a check of the plumbing (tiny network, 512 frames a game) and
runs the LN + NaP arm alone unless arms are named (``:smoke,rainbow``);
``:paper`` is the paper-like
scale for a GPU: all five MinAtar games, 2 cycles of 2M steps, noisy nets, 3 seeds.
"""

from __future__ import annotations

import ml_collections

from agents import configs
from plasticity import config_tools

VARIANTS = ("rainbow", "rainbow_ln", "rainbow_ln_nap")
# A smoke check compiles one arm (2-core CPUs spend most of a smoke run compiling): LN + NaP, whose
# code paths hold the other arms' (a norm, the projection, the restarted schedule).
SMOKE_VARIANTS = ("rainbow_ln_nap",)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The experiment: MinAtar Rainbow with three variants; ``arg``: scale, variants, 'noisy'."""
    scale, chosen, options = config_tools.parse_config_arg(arg, VARIANTS, ("noisy",))
    noisy = "noisy" in options or scale == "paper"
    config = configs.get_config("rainbow", "minatar")
    config.games = ("breakout", "space_invaders")
    config.cycles = 2
    config.frames_per_game = 20_000
    config.network.noisy = noisy
    config.exploration.update(
        dict(
            epsilon_begin=0.0 if noisy else 1.0,
            epsilon_end=0.0 if noisy else 0.01,
            decay_frames=10_000,
        )
    )
    config.replay.update(dict(capacity=40_000, min_fill_fraction=0.05))
    config.evaluation.update(dict(episodes=8, max_frames=8 * 2_504, fresh_reference=True))
    config.diagnostics.update(
        dict(
            every_frames=5_000,
            names=("weight_norm", "effective_lr", "update_ratio", "dormant", "srank"),
            batch_size=64,
        )
    )
    config.log_every_frames = 2_000
    config.checkpoint_every_frames = 10_000
    nap = dict(
        network=dict(norm="layernorm"),
        optimizer=dict(nap=dict(enabled=True), learning_rate=1e-3),
        switch=dict(restart_schedule=True),
    )
    config.variants = ml_collections.ConfigDict(
        dict(rainbow=dict(), rainbow_ln=dict(network=dict(norm="layernorm")), rainbow_ln_nap=nap)
    )
    config.variant_order = tuple(chosen) or (SMOKE_VARIANTS if scale == "smoke" else VARIANTS)
    if scale == "paper":
        config.games = ("breakout", "asterix", "freeway", "space_invaders", "seaquest")
        config.frames_per_game = 2_000_000
        config.num_seeds = 3
        config.replay.capacity = 100_000
        config.diagnostics.every_frames = 100_000
        config.log_every_frames = 20_000
        config.checkpoint_every_frames = 100_000
    if scale == "smoke":
        config.frames_per_game = 512
        config.env.num_envs = 2
        config.network.update(dict(conv_layers=((4, 3, 2),), hidden_sizes=(16,)))
        config.replay.update(dict(capacity=1024, min_fill_fraction=0.0625))
        config.evaluation.update(dict(episodes=2, max_frames=2 * 500))
        config.diagnostics.every_frames = 256
        config.log_every_frames = 256
        config.checkpoint_every_frames = 256
        config.optimizer.schedule.warmup_steps = 8
    return config
