"""(e) sequential_games: in a MinAtar game sequence a revisit by the baseline scores below a fresh
network trained for the same block, while LayerNorm + NaP stays near the fresh network.

Paper's claim (NaP, Lyle et al. 2024, Fig. 6; docs/algorithms.md, "Sequential Atari protocol"):
10 Atari games played one after another for 20M frames each, the sequence cycled twice, one
network throughout; on the second visit plain Rainbow scores well below a freshly initialized
network trained on that game alone, while Rainbow + LayerNorm + NaP comes close to it.

Settings (cpu scale; chosen so that the agents learn within 15 minutes, see "What we tried"):
DQN at PureJaxRL's ``dqn.py`` settings (`benchmarks.peer_settings.purejaxrl_config`: MinAtar
observations through an MLP 120-84, 10 envs, batch 128, one update every 10 steps, Adam 2.5e-4,
uniform replay of 10,000 transitions, target every 500 steps), ε 1 → 0.05 over the first 10,000
steps; games breakout then space_invaders, cycled twice, 100,000 steps (BLOCK) a game; replay and
optimizer kept at a switch; after every block every game seen so far is evaluated (8 episodes),
and a fresh network trained on each later game alone for one block (same seed, same initial
parameters) is the reference; the first game's is the sequence's own first block (its "fresh" bar
is "visit 1"). Arms: ``dqn`` (no norm) and ``dqn_ln_nap`` (LayerNorm before every nonlinearity +
NaP projection after every update, same optimizer and constant learning rate). 3 seeds vmapped in
one program per arm. ``paper`` scale: `benchmarks/configs/minatar_sequence.py:paper`'s sizes (5
games, 2M steps a game, Rainbow with noisy nets, MinAtar's conv torso) for the two arms.
``smoke``: the MinAtar DQN preset with a tiny conv network, 512 steps a game.

Metric: a revisit's score against the fresh network, visit_2 − fresh (mean return over the
evaluation episodes after the game's second block, minus the fresh reference's), averaged over
the games, per seed. Verdict (paired over seeds, 95% t-interval), PASS when both hold: the
baseline's revisit scores below fresh (gap < 0), and LN + NaP's gap − the baseline's > 0.

Measured (``python -m benchmarks.reproduce sequential_games``, seeds 0–2, 9.7 minutes beside other
jobs at load 3–4): both arms learn both games (breakout 4.6–5.4 after its first block without a
norm, 7.3–9.3 with LN + NaP; space invaders 20–29 after its first block, 35–38 on average after its
second; a random policy scores 0.56 and 2.84), and a revisit scores above the fresh network in both:
gap baseline 5.6 ± 15, LN + NaP 11 ± 14 (their difference 5.4 ± 19); verdict INCONCLUSIVE. At
100,000 steps a game what a network kept from its first visit outweighs any loss of plasticity (the
baseline's second breakout block ends at 7.9–9.3, against 4.6–5.4 after the first): the baseline's
half of the claim does not show (its mean points the other way); the paper's effect lives at 20M
Atari frames a game over ten games (``benchmarks/configs/atari_sequence.py:paper``; this claim's
``paper`` scale runs 2M-step MinAtar blocks).

What we tried: MinAtar's conv torso with the MinAtar DQN preset (4 envs, one update every 4
steps) ran at ~500 steps/s per seed, so 3 seeds × 2 arms × 5 blocks fit 15 minutes only with
blocks of 10,000 steps, where DQN barely learns (breakout 0.5–1.4, space invaders 0.25–3.9):
INCONCLUSIVE four times (mean gaps −0.2 to 2.6) with neither agent learning, i.e. telling
nothing. PureJaxRL's MLP settings with the 3 seeds vmapped ran 1,800 steps/s per seed (5,400 in
all, with evaluations, at load 3–4), 10× the conv runs' total. ε decays over 10,000
steps (PureJaxRL's schedule is half its run): the fresh reference starts its block at ε = 1 while
the sequence's later blocks play at ε = 0.05, so a slow decay handicaps the reference (at 50,000
steps, fresh space invaders 7–11 against 12–19 on the first visit). The first metric, visit_2 /
fresh, exploded on near-zero fresh scores and was replaced by the difference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import ml_collections
import numpy as np

from benchmarks.claims import base

NAME = "sequential_games"
SUMMARY = "a revisit by the baseline scores below a fresh network; LN+NaP stays near it"
ARMS = {"baseline": "dqn", "LN+NaP": "dqn_ln_nap"}
GAMES = ("breakout", "space_invaders")
BLOCK = 100_000  # steps a game at the cpu scale


def sequence_config(scale: str, seeds: int) -> ml_collections.ConfigDict:
    """Both arms as variants of one MinAtar sequence config (each trains in its own work dir)."""
    from agents import configs as agent_configs  # noqa: PLC0415

    base.check_scale(scale)
    if scale == "cpu":
        config = cpu_config(seeds)
    else:
        config = agent_configs.get_config("rainbow" if scale == "paper" else "dqn", "minatar")
        config.num_seeds = seeds
    config.games = GAMES
    config.cycles = 2
    config.evaluation.update(dict(episodes=8, max_frames=8 * 2_504, fresh_reference=True))
    nap = dict(network=dict(norm="layernorm"), optimizer=dict(nap=dict(enabled=True)))
    config.variants = ml_collections.ConfigDict({ARMS["baseline"]: {}, ARMS["LN+NaP"]: nap})
    config.variant_order = tuple(ARMS.values())
    if scale == "paper":
        config.games = ("breakout", "asterix", "freeway", "space_invaders", "seaquest")
        config.frames_per_game = 2_000_000
        config.env.num_envs = 8
        config.replay.update(dict(capacity=100_000, min_fill_fraction=0.05))
        config.exploration.decay_frames = 100_000
        config.learner.target_update_period_frames = 4_000
        config.diagnostics.update(
            dict(every_frames=100_000, names=("weight_norm", "effective_lr"), batch_size=64)
        )
        config.log_every_frames = 20_000
        config.checkpoint_every_frames = 100_000
        config.run.runs_per_batch = 0  # a GPU: all seeds vmapped
    if scale == "smoke":
        config.frames_per_game = 512
        config.env.num_envs = 2
        config.network.update(dict(conv_layers=((4, 3, 2),), hidden_sizes=(16,)))
        config.replay.update(dict(capacity=1024, min_fill_fraction=0.0625))
        config.learner.target_update_period_frames = 128
        config.exploration.decay_frames = 256
        config.evaluation.update(dict(episodes=2, max_frames=2 * 500))
        config.diagnostics.update(
            dict(every_frames=256, names=("weight_norm", "effective_lr"), batch_size=64)
        )
        config.log_every_frames = 256
        config.checkpoint_every_frames = 256
        config.optimizer.schedule.warmup_steps = 8
        config.run.runs_per_batch = 1
    return config


def cpu_config(seeds: int) -> ml_collections.ConfigDict:
    """PureJaxRL's ``dqn.py`` settings (`benchmarks.peer_settings.purejaxrl_config`: MLP
    120-84, 10 envs, batch 128, one update per 10 steps, Adam 2.5e-4, a 10,000-transition
    replay, target every 500 steps), which learn MinAtar at the loop's fastest, with BLOCK
    steps a game, ε 1 → 0.05 over the first tenth of the first block, and the seeds vmapped."""
    from benchmarks import peer_settings  # noqa: PLC0415

    config = peer_settings.purejaxrl_config(seeds, BLOCK, diagnostics=True, runs_per_batch=0)
    config.exploration.decay_frames = BLOCK // 10
    config.diagnostics.update(
        dict(every_frames=BLOCK // 4, names=("weight_norm", "effective_lr"), batch_size=64)
    )
    config.log_every_frames = BLOCK // 4
    config.checkpoint_every_frames = BLOCK // 4
    return config


def configs(scale: str, seeds: int) -> dict[str, ml_collections.ConfigDict]:
    return {"sequence": sequence_config(scale, seeds)}


def check(config: ml_collections.ConfigDict) -> None:
    base.check_config(config)


def visit_gaps(rows: list, visit: int = 2) -> dict[int, float]:
    """{seed: mean over games of (score after the game's `visit`-th block) − (fresh score)}."""
    scores: dict[int, dict[str, dict[str, float]]] = {}
    for row in rows:
        value = row.get("return_mean")
        if value is None or not np.isfinite(value) or row.get("game") is None:
            continue
        seed, game = int(row["seed"]), row["game"]
        if row.get("event") == "eval_fresh":
            scores.setdefault(seed, {}).setdefault(game, {})["fresh"] = float(value)
        elif row.get("event") == "eval" and row.get("trained_game") == game:
            if int(row.get("visit", 0)) == visit and row.get("end_of_block", True):
                scores.setdefault(seed, {}).setdefault(game, {})["visit"] = float(value)
    out = {}
    for seed, games in sorted(scores.items()):
        gaps = [g["visit"] - g["fresh"] for g in games.values() if "visit" in g and "fresh" in g]
        out[seed] = float(np.mean(gaps)) if gaps else float("nan")
    return out


def evaluate(arm_rows: dict[str, list]) -> list[base.Row]:
    gaps = {arm: visit_gaps(rows) for arm, rows in arm_rows.items()}
    return [
        base.Row(
            "",
            "visit-2 return − fresh return (mean over games)",
            {arm: base.interval_of(v) for arm, v in gaps.items()},
            [
                base.paired("baseline: visit 2 − fresh", -1, gaps["baseline"]),
                base.paired("LN+NaP − baseline", 1, gaps["LN+NaP"], gaps["baseline"]),
            ],
        )
    ]


def figure(arm_rows: dict[str, list], path: Path) -> str:
    """Per game: score after each visit and the fresh reference, per arm (the seeds' mean; error
    bars from the lowest to the highest seed)."""
    plt = base.pyplot()
    games = sorted({r["game"] for rows in arm_rows.values() for r in rows if r.get("game")})
    fig, axes = plt.subplots(
        1, max(1, len(games)), figsize=(4.2 * max(1, len(games)), 3.2), layout="constrained"
    )
    axes = np.atleast_1d(axes)
    for ax, game in zip(axes, games):
        for i, (arm, rows) in enumerate(arm_rows.items()):
            columns: dict[str, list[float]] = {}
            for r in rows:
                if r.get("game") != game or r.get("return_mean") is None:
                    continue
                if r.get("event") == "eval_fresh":
                    # The first game's reference is the sequence's first block: visit 1 again.
                    fresh = "fresh\n(= visit 1)" if r.get("from_sequence_block") == 0 else "fresh"
                    columns.setdefault(fresh, []).append(r["return_mean"])
                elif r.get("event") == "eval" and r.get("trained_game") == game:
                    columns.setdefault(f"visit {r['visit']}", []).append(r["return_mean"])
            names = sorted(c for c in columns if not c.startswith("fresh"))
            names += sorted(c for c in columns if c.startswith("fresh"))
            x = np.arange(len(names)) + (i - 0.5) * 0.35
            means = [np.nanmean(columns[n]) for n in names]
            errors = [
                [m - np.nanmin(columns[n]) for m, n in zip(means, names)],
                [np.nanmax(columns[n]) - m for m, n in zip(means, names)],
            ]
            ax.bar(x, means, width=0.35, yerr=errors, label=arm, color=f"C{i}", capsize=3)
            ax.set_xticks(np.arange(len(names)), names)
        ax.set_title(game, fontsize=10)
        ax.set_ylabel("mean return")
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=8)
    fig.suptitle(
        "(e) MinAtar sequence: visits vs a fresh network (mean over seeds, bars: min to max)",
        fontsize=10,
    )
    return base.save_figure(fig, path)


def run(
    workdir: Path,
    scale: str,
    seeds: int,
    run_options: Mapping[str, Any] = base.NO_RUN_OPTIONS,
    data_dir: str | None = None,
) -> base.ClaimResult:
    """Trains the sequence's arms and the fresh references (MinAtar: `data_dir` is unused)."""
    del data_dir  # the games ship with gymnax
    from agents import configs as agent_configs  # noqa: PLC0415
    from agents import minatar_loop  # noqa: PLC0415

    timer = base.Timer()
    config = sequence_config(scale, seeds)
    arm_rows, dirs = {}, []
    runs = dict(agent_configs.expand_runs(config, "minatar", str(workdir)))
    for arm, variant in ARMS.items():
        path = str(workdir / variant)
        result = minatar_loop.train(runs[path], path, **run_options)
        base.check_finished(result, timer, run_options, last=arm == list(ARMS)[-1])
        arm_rows[arm] = base.load_rows(path)
        dirs.append(path)
    return base.ClaimResult(
        NAME,
        scale,
        seeds,
        evaluate(arm_rows),
        seconds=timer.seconds(workdir),
        figures=[figure(arm_rows, workdir / f"{NAME}.png")],
        workdirs=dirs,
    )
