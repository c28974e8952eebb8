r"""The project at its peers' exact settings, through the code users run: figures to set beside them.

  python -m benchmarks.peers --workload=minatar_purejaxrl [--seeds=1] [--steps=200000]
  python -m benchmarks.peers --workload=atari_cleanrl [--steps=2048]
  python -m benchmarks.peers --workload=bitflip_lop [--seeds=1] [--examples=1000000]
  python -m benchmarks.peers --workload=permuted_mnist_lop [--examples=2000]

Each workload prints the project's throughput, the hardware and the load average; run the peer's
command (in its docstring below) right before or after on the same machine, quiet (``cat
/proc/loadavg``), and report the ratio. Peers run from their own checkouts, never from this
repository; the adaptations a current software stack needs are listed with each command.

* ``minatar_purejaxrl``: PureJaxRL's ``purejaxrl/dqn.py`` (CleanRL's DQN in JAX) on Breakout-MinAtar:
  10 envs, MLP 120-84, Adam 2.5e-4, batch 128, one update every 10 env steps (one per loop
  iteration), buffer 10k, learning from 10k steps, target copied every 500 steps, epsilon 1 -> 0.05
  over 250k steps, squared TD loss, no sticky actions. The project runs `agents.minatar_loop.train`
  with the same settings (a DQN preset with an MLP torso); its evaluation is one episode per block
  and its diagnostics are off, as the peer has none (``--diagnostics`` switches the preset's on).
  The peer: in a checkout of luchris429/purejaxrl with ``flashbax`` installed, time
  ``jax.jit(jax.vmap(make_train(config)))`` on ``jax.random.split(key, SEEDS)`` with the config
  above and ``ENV_NAME='Breakout-MinAtar'`` (compile apart). gymnax 1.0 returns (obs, state,
  reward, terminated, truncated, info) where the file unpacks five values: wrap its ``LogWrapper``
  so that ``done = terminated | truncated``; jax 0.10 has no ``jax.tree_map``: alias
  ``jax.tree.map``; the file imports ``wandb``: stub the module.
"""

from __future__ import annotations

import time

from absl import app, flags

_WORKLOAD = flags.DEFINE_enum(
    "workload",
    "minatar_purejaxrl",
    ["minatar_purejaxrl"],
    "Which peer's settings to run.",
)
_SEEDS = flags.DEFINE_integer("seeds", 1, "Seeds trained together (vmapped).")
_STEPS = flags.DEFINE_integer("steps", 200_000, "Environment steps per seed.")
_DIAGNOSTICS = flags.DEFINE_bool("diagnostics", False, "Keep the preset's diagnostics on.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs after the compiling one (median).")


def purejaxrl_config(seeds: int, steps: int, diagnostics: bool):
    """The MinAtar DQN preset at PureJaxRL's ``dqn.py`` settings (module docstring)."""
    from agents import configs  # noqa: PLC0415

    config = configs.get_config("dqn", "minatar")
    config.games, config.frames_per_game, config.num_seeds = ("breakout",), steps, seeds
    config.env.update(dict(num_envs=10, sticky_action_prob=0.0))
    config.network.update(dict(torso="mlp", mlp_sizes=(120,), hidden_sizes=(84,)))
    config.learner.update(
        dict(batch_size=128, n_step=1, double_q=False, huber_delta=0.0),
        target_update_period_frames=500,
    )
    config.updates_per_frame = 0.1
    config.replay.update(dict(capacity=10_000, min_fill_fraction=1.0, prioritized=False))
    config.exploration.update(dict(epsilon_begin=1.0, epsilon_end=0.05, decay_frames=250_000))
    config.optimizer.update(dict(name="adam", learning_rate=2.5e-4, eps=1e-8, max_grad_norm=0.0))
    config.evaluation.update(dict(episodes=1, max_frames=1_000, fresh_reference=False))
    config.checkpoint_every_frames = steps
    config.log_every_frames = steps
    config.run.runs_per_batch = 0  # vmap the seeds, as the peer does
    if not diagnostics:
        config.diagnostics.every_frames = 0
    return config


def minatar_purejaxrl() -> None:
    import numpy as np  # noqa: PLC0415

    from agents import minatar_loop  # noqa: PLC0415

    config = purejaxrl_config(_SEEDS.value, _STEPS.value, _DIAGNOSTICS.value)
    seconds = []
    for repeat in range(_REPEATS.value + 1):  # the first run compiles
        started = time.perf_counter()
        minatar_loop.train(config, None, show_progress=False)
        if repeat:
            seconds.append(time.perf_counter() - started)
    best = float(np.median(seconds))
    steps = _STEPS.value * _SEEDS.value
    from plasticity import runtime  # noqa: PLC0415

    print(runtime.hardware_line())
    print(
        f"minatar_purejaxrl: project {_SEEDS.value} seed(s) x {_STEPS.value:,} steps: "
        f"{best:.2f} s (median of {len(seconds)}) -> {steps / best:,.0f} env steps/s total "
        f"({steps / best / _SEEDS.value:,.0f} per seed); diagnostics "
        f"{'on' if _DIAGNOSTICS.value else 'off'}"
    )


def main(argv) -> None:
    del argv
    from plasticity import runtime  # noqa: PLC0415

    runtime.apply_runtime_defaults()  # as the launchers: the same random-bit layout and threads
    {"minatar_purejaxrl": minatar_purejaxrl}[_WORKLOAD.value]()


if __name__ == "__main__":
    app.run(main)
