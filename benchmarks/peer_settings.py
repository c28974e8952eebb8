"""The project's configs at its peers' exact settings (`benchmarks.peers` times them; the
commands that run each peer are in that module's docstring)."""

from __future__ import annotations

import ml_collections


def purejaxrl_config(
    seeds: int, steps: int, diagnostics: bool, runs_per_batch: int | None = None
) -> ml_collections.ConfigDict:
    """The MinAtar DQN preset at PureJaxRL's ``dqn.py`` settings (`benchmarks.peers`).

    ``runs_per_batch`` is how each device runs its seeds (``run.runs_per_batch``): None keeps the
    project's default (one seed at a time on CPUs, all vmapped on GPUs and TPUs), 0 vmaps them all
    as the peer does. It changes the speed, not the algorithm (results agree up to float
    rounding). The peer computes no gradient norm, so neither does the preset
    (``learner.grad_norm``); ``diagnostics`` keeps the MinAtar preset's diagnostics and the norm."""
    from agents import configs  # noqa: PLC0415

    config = configs.get_config("dqn", "minatar")
    config.games, config.frames_per_game, config.num_seeds = ("breakout",), steps, seeds
    config.env.update(dict(num_envs=10, sticky_action_prob=0.0))
    config.network.update(  # Flax's default initialization, as the peer's `nn.Dense`s
        dict(torso="mlp", mlp_sizes=(120,), hidden_sizes=(84,), initialization="lecun_normal")
    )
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
    config.run.runs_per_batch = runs_per_batch
    config.learner.grad_norm = diagnostics
    if not diagnostics:
        config.diagnostics.every_frames = 0
    return config


def seed_mapping(config: ml_collections.ConfigDict) -> str:
    """How the MinAtar loop runs a config's seeds on each device, in words (for reports)."""
    from agents import minatar_loop  # noqa: PLC0415

    per_batch = minatar_loop.runs_per_batch(config)
    if config.num_seeds == 1:
        return "one seed"
    if per_batch == 0:
        return "seeds vmapped on each device"
    if per_batch == 1:
        return "one seed at a time on each device"
    return f"{per_batch} seeds at a time on each device"


def define_cpu_products_flag() -> None:
    """Defines the ``--cpu_products`` flag of the MinAtar benchmarks (``run.cpu_products``)."""
    from absl import flags  # noqa: PLC0415

    from plasticity.runtime import CPU_PRODUCTS  # noqa: PLC0415

    flags.DEFINE_enum(
        "cpu_products",
        "auto",
        list(CPU_PRODUCTS),
        "MinAtar: the loop's matrix products on CPUs (run.cpu_products; auto: XLA's own kernels "
        "for the MLP torso, YNNPACK's otherwise).",
    )


def products_in_words(config: ml_collections.ConfigDict) -> str:
    """Which kernels compute the MinAtar loop's matrix products (``run.cpu_products``), in words."""
    import jax  # noqa: PLC0415

    from agents import minatar_loop  # noqa: PLC0415

    if jax.default_backend() != "cpu":
        return f"{jax.default_backend()} matrix products"
    if minatar_loop.chunk_compiler_options(config):
        return "XLA's own matrix products (YNNPACK off in the loop)"
    return "matrix products as XLA_FLAGS set them (YNNPACK by default)"


def cleanrl_config(game: str, agent_steps: int) -> ml_collections.ConfigDict:
    """The Atari DQN preset at CleanRL's ``dqn_atari.py`` settings (`benchmarks.peers`), learning
    from the first 1,000 agent steps so that the timed steps learn; like the peer, with neither
    diagnostics nor a gradient norm."""
    from agents import configs  # noqa: PLC0415

    config = configs.get_config("dqn")
    config.games, config.frames_per_game = (game,), 4 * agent_steps
    config.env.update(dict(num_envs=1, sticky_action_prob=0.0))
    config.network.torso = "nature"
    config.learner.update(
        dict(batch_size=32, n_step=1, double_q=False, huber_delta=0.0),
        target_update_period_frames=4 * 1_000,
    )
    config.updates_per_frame = 1 / 16  # one update per 4 agent steps of 4 frames
    config.replay.update(dict(capacity=10_000, min_fill_fraction=0.1, prioritized=False))
    config.exploration.update(dict(epsilon_begin=1.0, epsilon_end=0.01, decay_frames=4_000_000))
    config.optimizer.update(dict(name="adam", learning_rate=1e-4, eps=1e-8, max_grad_norm=0.0))
    config.evaluation.update(dict(episodes=1, max_frames=4, fresh_reference=False))
    config.diagnostics.every_frames = 0
    config.learner.grad_norm = False
    config.log_every_frames = 4 * max(256, agent_steps // 8)
    config.checkpoint_every_frames = config.frames_per_game
    return config


def bitflip_config(seeds: int, examples: int) -> ml_collections.ConfigDict:
    """Dohare et al.'s bit flipping with plain backprop at loss-of-plasticity's settings: 20 input
    bits of which 15 flip one at a time every 10,000 examples, a target network of 100 LTUs,
    learner 20-5-1 ReLU, SGD 0.01, batch 1, every example seen once; no diagnostics."""
    from benchmarks.configs import dohare  # noqa: PLC0415

    config = dohare.get_config()
    config.variant_order = ("bit_flipping/backprop",)
    config.grid.l2 = ()
    config.num_seeds = seeds
    task = config.variants["bit_flipping/backprop"].task
    task.num_tasks = max(1, examples // task.flip_period)
    config.variants["bit_flipping/backprop"].diagnostics = {"every": 0}
    config.diagnostics.every = 0
    config.run.update(dict(runs_per_batch=0, progress=False, tensorboard=False))
    return config


def permuted_mnist_config(examples: int) -> ml_collections.ConfigDict:
    """loss-of-plasticity's online permuted MNIST with backprop: 784-2000-2000-2000-10 ReLU,
    SGD 0.003, batch 1, each example once; tasks of ``examples`` examples; no diagnostics."""
    from benchmarks.configs import dohare  # noqa: PLC0415

    config = dohare.get_config("paper")
    config.variant_order = ("permuted_inputs/backprop",)
    config.grid.l2 = ()
    variant = config.variants["permuted_inputs/backprop"]
    variant.task.update(dict(num_tasks=2, steps_per_task=examples // 2))
    variant.diagnostics = {"every": 0}
    config.diagnostics.every = 0
    config.run.update(dict(progress=False, tensorboard=False, tasks_per_chunk=2))
    return config


def mnist_shaped_noise(examples: int):
    """Random 28x28 images and labels in MNIST's layout: batch-1 throughput does not depend on
    the pixel values, and nothing may be downloaded (give --data_dir for the real files)."""
    import numpy as np  # noqa: PLC0415

    from benchmarks import datasets  # noqa: PLC0415

    rng = np.random.default_rng(0)
    images = rng.random((examples, 28, 28, 1), dtype=np.float32)
    labels = rng.integers(0, 10, examples, dtype=np.int32)
    return datasets.Dataset(images, labels, images[:0], labels[:0], 10, "mnist")
