"""Default configurations of the DQN and Rainbow agents on Atari, counted in environment frames.

Both presets are DQN Zoo's settings (Quan & Ostrovski, 2020), which the NaP paper uses as its
Rainbow baseline. A frame is one emulator frame: one agent step is ``env.frame_skip`` (4) frames.
Budgets, periods and schedules are counted in frames; sizes (replay capacity, learning start) are
counted in transitions (agent steps), as DQN Zoo does.

Rainbow (DQN Zoo ``rainbow/run_atari.py``): replay 1M transitions, prioritized (exponent 0.5,
importance exponent 0.4 -> 1.0 over training), learning starts once 2% of the replay is filled,
batch 32, one update every 16 frames, target network copied every 32,000 frames, Adam lr 6.25e-5
eps 1.5625e-4, global gradient clip 10, 3-step returns, discount 0.99, rewards clipped to [-1, 1],
C51 with 51 atoms on [-10, 10], noisy nets (sigma init 0.1) and no epsilon-greedy, dueling,
double Q; evaluation with epsilon 0 and the noise sampled.

DQN (DQN Zoo ``dqn/run_atari.py``, i.e. Nature DQN): replay 1M, uniform, learning starts at 5%,
batch 32, one update every 16 frames, target copied every 40,000 frames, centred RMSProp lr 2.5e-4
decay 0.95 eps 0.01 / 32^2, global gradient clip 10, 1-step Q-learning whose TD error is gradient-
clipped at 1/32 (a Huber loss with delta 1/32), epsilon-greedy 1.0 -> 0.1 over 4M frames, evaluation
epsilon 0.05.

Deviations, all configurable: DQN Zoo mixes 0.1% uniform sampling into prioritized replay
(``uniform_sample_probability``); here a small ``priority_epsilon`` keeps every item sampleable
instead. Evaluation runs a fixed number of episodes (capped in frames) rather than DQN Zoo's 500k
frames per iteration.

Both presets have the same fields with the same types, so ``--config.*`` overrides apply to either.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from plasticity.optim import default_optimizer_config

AGENTS = ("dqn", "rainbow")
TORSOS = ("nature", "conv", "mlp")


def _base_config() -> ml_collections.ConfigDict:
    """Every field an agent run reads; the agent presets below change some of them."""
    config = ml_collections.ConfigDict()
    config.agent = "rainbow"
    config.seed = 0
    config.frames_per_game = 200_000_000  # DQN Zoo: 200 iterations x 1M frames

    config.env = ml_collections.ConfigDict(
        dict(
            num_envs=8,
            num_threads=config_dict.placeholder(int),  # None: one per env, at most one per core
            sticky_action_prob=0.0,
            # None: the full 18-action set when the run plays more than one game, else the
            # game's own.
            full_action_space=config_dict.placeholder(bool),
            noop_max=30,
            frame_skip=4,
            stack=4,
            max_episode_frames=108_000,
            life_loss_ends_bootstrap=True,
            reward_clip=True,
            screen_size=84,
        )
    )

    config.network = ml_collections.ConfigDict(
        dict(
            # 'nature' | 'conv' (conv_layers) | 'mlp' (mlp_sizes); the small ones serve tests.
            torso="nature",
            conv_layers=(
                (32, 8, 4),
                (64, 4, 2),
                (64, 3, 1),
            ),  # (features, kernel, stride) for 'conv'
            mlp_sizes=(256,),
            hidden_sizes=(512,),
            norm="none",
            activation="relu",
            dueling=True,
            num_atoms=51,
            v_min=-10.0,
            v_max=10.0,
            noisy=True,
            noisy_sigma_init=0.1,
        )
    )

    config.learner = ml_collections.ConfigDict(
        dict(
            batch_size=32,
            n_step=3,
            discount=0.99,
            double_q=True,
            huber_delta=1.0,  # scalar heads: Huber loss on the TD error; 0 gives 0.5 td^2
            target_update_period_frames=32_000,
            priority_max=100.0,  # new priorities are clipped to [0, priority_max] ...
            priority_epsilon=1e-6,  # ... plus this, so that no item becomes unsampleable
        )
    )
    config.updates_per_frame = 1.0 / 16.0  # replay ratio: one update every 16 frames

    config.replay = ml_collections.ConfigDict(
        dict(
            capacity=1_000_000,  # transitions
            prioritized=True,
            priority_exponent=0.5,
            importance_exponent_begin=0.4,
            importance_exponent_end=1.0,
            # Frames (after learning starts) over which the importance exponent is annealed;
            # 0: the whole training budget of the run.
            importance_exponent_anneal_frames=0,
            min_fill_fraction=0.02,  # learning starts once this fraction of capacity is filled
        )
    )

    config.exploration = ml_collections.ConfigDict(
        dict(
            # epsilon_begin until learning starts, then linear to epsilon_end over decay_frames.
            epsilon_begin=0.0,
            epsilon_end=0.0,
            decay_frames=4_000_000,
        )
    )

    config.optimizer = default_optimizer_config()
    config.optimizer.update(
        dict(name="adam", learning_rate=6.25e-5, eps=1.5625e-4, max_grad_norm=10.0)
    )

    config.evaluation = ml_collections.ConfigDict(
        dict(
            every_frames=1_000_000,  # also after the last frame of every game
            episodes=10,
            max_frames=500_000,  # per evaluation; unfinished episodes are not counted
            epsilon=0.0,
            noise=True,  # noisy nets: sample the noise (DQN Zoo) or use the mean weights
            num_envs=config_dict.placeholder(int),  # None: env.num_envs
        )
    )

    # Plasticity diagnostics (`plasticity.diagnostics`) on a uniform replay batch; 0 switches off.
    config.diagnostics = ml_collections.ConfigDict(
        dict(
            every_frames=0,
            names=("weight_norm", "effective_lr", "update_ratio", "dormant", "srank"),
            batch_size=64,
        )
    )
    # A plasticity intervention (`plasticity.interventions`) every `every_frames` frames (0: never).
    config.intervention = ml_collections.ConfigDict(
        dict(name="none", every_frames=0, batch_size=64, options=ml_collections.ConfigDict())
    )

    config.log_every_frames = 100_000
    config.checkpoint_every_frames = 5_000_000
    config.keep_checkpoints = 2
    return config


def rainbow_config() -> ml_collections.ConfigDict:
    """DQN Zoo's Rainbow (see the module docstring)."""
    config = _base_config()
    config.agent = "rainbow"
    return config


def dqn_config() -> ml_collections.ConfigDict:
    """DQN Zoo's DQN, i.e. Nature DQN (see the module docstring)."""
    config = _base_config()
    config.agent = "dqn"
    config.network.update(dict(dueling=False, num_atoms=1, noisy=False, noisy_sigma_init=0.5))
    config.learner.update(
        dict(n_step=1, double_q=False, huber_delta=1.0 / 32.0, target_update_period_frames=40_000)
    )
    config.replay.update(dict(prioritized=False, min_fill_fraction=0.05))
    config.exploration.update(dict(epsilon_begin=1.0, epsilon_end=0.1, decay_frames=4_000_000))
    config.optimizer.update(
        dict(
            name="rmsprop",
            learning_rate=2.5e-4,
            rmsprop_decay=0.95,
            rmsprop_centered=True,
            eps=0.01 / 32**2,
        )
    )
    config.evaluation.update(dict(epsilon=0.05))
    return config


def get_config(agent: str) -> ml_collections.ConfigDict:
    """The preset of ``agent`` ('dqn' or 'rainbow'), or a one-line ValueError."""
    presets = {"dqn": dqn_config, "rainbow": rainbow_config}
    if agent not in presets:
        raise ValueError(f"unknown agent {agent!r}: expected one of {', '.join(AGENTS)}")
    return presets[agent]()


def smoke_config(agent: str) -> ml_collections.ConfigDict:
    """``agent``'s preset shrunk for smoke runs and CI: a 2-layer conv torso, 2 envs, 2,048 frames.

    Everything the full run does happens (learning starts, target copies, evaluation, checkpoints);
    only the sizes are small. About a minute on a 2-core CPU, most of it compilation.
    """
    config = get_config(agent)
    config.frames_per_game = 2048
    config.env.num_envs = 2
    config.network.update(
        dict(torso="conv", conv_layers=((8, 8, 4), (8, 4, 2)), hidden_sizes=(32,))
    )
    config.replay.update(dict(capacity=512, min_fill_fraction=0.125))
    config.learner.target_update_period_frames = 256
    config.exploration.decay_frames = 1024
    config.evaluation.update(dict(every_frames=1024, episodes=2, max_frames=400))
    config.log_every_frames = 512
    config.checkpoint_every_frames = 1024
    return config


def target_update_period_updates(config: ml_collections.ConfigDict) -> int:
    """Learner updates between two target-network copies: the frame period x the replay ratio."""
    return max(1, round(config.learner.target_update_period_frames * config.updates_per_frame))


def learning_starts_transitions(config: ml_collections.ConfigDict) -> int:
    """Transitions the replay must hold before the first update (at least one batch)."""
    return max(
        int(config.replay.min_fill_fraction * config.replay.capacity), config.learner.batch_size
    )


def linear_schedule(count: float, begin_value: float, end_value: float, duration: float) -> float:
    """``begin_value`` at count 0, linear to ``end_value`` at ``duration``, then held."""
    if duration <= 0:
        return end_value
    fraction = min(max(count / duration, 0.0), 1.0)
    return begin_value + (end_value - begin_value) * fraction


def validate_config(config: ml_collections.ConfigDict) -> None:
    """One-line ValueErrors for settings that cannot work together, before anything is built."""
    from plasticity.layers import check_activation, check_norm
    from plasticity.nap import check_nap_config

    if config.agent not in AGENTS:
        raise ValueError(f"unknown agent {config.agent!r}: expected one of {', '.join(AGENTS)}")
    if config.network.torso not in TORSOS:
        raise ValueError(
            f"unknown torso {config.network.torso!r}: expected one of {', '.join(TORSOS)}"
        )
    check_norm(config.network.norm)
    check_activation(config.network.activation)
    check_nap_config(config.network.norm, config.optimizer.nap.enabled)
    positive = {
        "frames_per_game": config.frames_per_game,
        "env.num_envs": config.env.num_envs,
        "env.frame_skip": config.env.frame_skip,
        "learner.batch_size": config.learner.batch_size,
        "learner.n_step": config.learner.n_step,
        "network.num_atoms": config.network.num_atoms,
        "replay.capacity": config.replay.capacity,
        "evaluation.episodes": config.evaluation.episodes,
        "evaluation.every_frames": config.evaluation.every_frames,
        "log_every_frames": config.log_every_frames,
        "checkpoint_every_frames": config.checkpoint_every_frames,
    }
    for name, value in positive.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if not 0.0 < config.updates_per_frame <= 1.0:
        raise ValueError(f"updates_per_frame must be in (0, 1], got {config.updates_per_frame}")
    if not 0.0 <= config.learner.discount <= 1.0:
        raise ValueError(f"learner.discount must be in [0, 1], got {config.learner.discount}")
    if config.network.num_atoms > 1 and not config.network.v_min < config.network.v_max:
        raise ValueError(
            f"network.v_min ({config.network.v_min}) must be below v_max ({config.network.v_max})"
        )
    for name in ("epsilon_begin", "epsilon_end"):
        if not 0.0 <= config.exploration[name] <= 1.0:
            raise ValueError(
                f"exploration.{name} must be in [0, 1], got {config.exploration[name]}"
            )
    frames_per_vector_step = config.env.num_envs * config.env.frame_skip
    if config.frames_per_game % frames_per_vector_step:
        raise ValueError(
            f"frames_per_game ({config.frames_per_game}) must be a multiple of env.num_envs x "
            f"env.frame_skip = {frames_per_vector_step}, so that games switch at exact frame counts"
        )
    if not 0.0 < config.replay.min_fill_fraction <= 1.0:
        raise ValueError(
            f"replay.min_fill_fraction must be in (0, 1], got {config.replay.min_fill_fraction}"
        )
    slots_per_env = config.replay.capacity // config.env.num_envs
    if slots_per_env <= config.env.stack + config.learner.n_step:
        raise ValueError(
            f"replay.capacity ({config.replay.capacity}) is too small for {config.env.num_envs} "
            f"envs: each env needs more than stack + n_step = "
            f"{config.env.stack + config.learner.n_step} slots"
        )
