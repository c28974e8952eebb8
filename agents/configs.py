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
double Q; evaluation with epsilon 0 and the noise sampled. Without noisy nets
(``network.noisy=False``) the agent needs an epsilon-greedy schedule (``exploration.*``): one that
stays at 0 is refused, since nothing would explore.

DQN (DQN Zoo ``dqn/run_atari.py``, i.e. Nature DQN): replay 1M, uniform, learning starts at 5%,
batch 32, one update every 16 frames, target copied every 40,000 frames, centred RMSProp lr 2.5e-4
decay 0.95 eps 0.01 / 32^2 and no clipping of the gradient's norm, 1-step Q-learning whose TD
error is gradient-clipped at 1/32 (a Huber loss with delta 1/32), epsilon-greedy 1.0 -> 0.1 over
4M frames, evaluation epsilon 0.05.

Both: plain layers' kernels and biases drawn from U(+-1/sqrt(fan_in)) (``network.initialization``,
DQN Zoo's; noisy layers draw their means so too).

Deviations, all configurable: DQN Zoo mixes 0.1% uniform sampling into prioritized replay
(``uniform_sample_probability``); here a small ``priority_epsilon`` keeps every item sampleable
instead. Evaluation runs a fixed number of episodes (capped in frames) rather than DQN Zoo's 500k
frames per iteration.

Both presets have the same fields with the same types, so ``--config.*`` overrides apply to either.
"""

from __future__ import annotations

from typing import Any

import ml_collections
from ml_collections import config_dict

from plasticity.optim import default_optimizer_config
from plasticity.runtime import CPU_PRODUCTS

AGENTS = ("dqn", "rainbow")
# What the RL presets measure by default: dormant, dead and linearized units, feature ranks and
# the top singular value, per-layer weight norms, effective learning rates and update sizes.
DEFAULT_RL_DIAGNOSTICS = (
    "dormant",
    "dead",
    "linearized",
    "srank",
    "effective_rank",
    "feature_svd",
    "weight_norm",
    "grad_norm",
    "update_ratio",
    "effective_lr",
)
TORSOS = ("nature", "conv", "mlp")


def _base_config() -> ml_collections.ConfigDict:
    """Every field an agent run reads; the agent presets below change some of them."""
    config = ml_collections.ConfigDict()
    config.agent = "rainbow"
    config.games = ("pong",)  # played one after another, the list ``cycles`` times
    config.cycles = 1
    config.seed = 0
    config.num_seeds = 1  # seeds seed, seed + 1, ...; Atari runs each as its own run
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
            # 'fan_in_uniform': U(±1/√fan_in) kernels and biases, DQN Zoo's (and PyTorch's
            # default); 'lecun_normal': Flax's default (`plasticity.networks.initialize`).
            initialization="fan_in_uniform",
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
            # The global gradient norm of every update, logged and checked for NaN/Inf with the
            # loss. False skips it: on a CPU, with a small network, it is a tenth of the update.
            grad_norm=True,
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
            # Learning frames (those after learning starts, and after each refill of a flushed
            # replay) over which the importance exponent is annealed; 0: all of the sequence's,
            # so that it reaches its end value with the sequence (DQN Zoo's schedule).
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
    # NaP's sequential-ALE schedule shape, used when switch.restart_schedule restarts a warm-up +
    # cosine schedule at every game: init_value -> learning_rate over warmup_steps -> end_value
    # (schedule.name stays 'constant' then). Another schedule.name with total_steps 0 spans the
    # sequence's updates, and cosine_restarts without boundaries restarts at every game.
    config.optimizer.schedule.update(dict(init_value=1e-8, warmup_steps=1_000, end_value=1e-6))

    # What happens at a game switch (`agents.sequence.SwitchPolicy`; the paper's is unconfirmed).
    config.switch = ml_collections.ConfigDict(
        dict(flush_replay=False, reset_optimizer=False, restart_schedule=False)
    )

    config.evaluation = ml_collections.ConfigDict(
        dict(
            every_frames=1_000_000,  # also after the last frame of every game
            episodes=10,
            max_frames=500_000,  # per evaluation; unfinished episodes are not counted
            epsilon=0.0,
            noise=True,  # noisy nets: sample the noise (DQN Zoo) or use the mean weights
            num_envs=config_dict.placeholder(int),  # None: env.num_envs
            # Also train a fresh network per later game for one block (the first game's is the
            # sequence's first block): the reference a revisit is compared with.
            fresh_reference=True,
        )
    )

    # Plasticity diagnostics (`plasticity.diagnostics`) on a uniform replay batch, on by default:
    # every 250k frames (800 times in a 200M-frame game) costs well under 1% of the run
    # (`python -m benchmarks.diagnostics_cost --loop=atari`); 0 switches them off.
    config.diagnostics = ml_collections.ConfigDict(
        dict(
            every_frames=250_000,
            names=DEFAULT_RL_DIAGNOSTICS,
            batch_size=64,
            # p of 'effective_lr/<layer>' = η/‖W‖^p; 0: by optimizer (2 for SGD and momentum,
            # 1 for Adam and RMSProp: `plasticity.effective_lr.optimizer_exponent`).
            effective_lr_exponent=0.0,
            # `plasticity.diagnostics.DiagnosticsOptions` fields (an experiment file, or
            # --config.diagnostics.options.<field>):
            # e.g. activity_tolerance, dormant_thresholds, srank_delta, penultimate_layer.
            options=ml_collections.ConfigDict(),
        )
    )
    # A plasticity intervention (`plasticity.interventions`) every `every_frames` frames (0: never)
    # and/or at every game switch, on a uniform replay batch of `batch_size`. One due at a block's
    # last frame runs after the block's evaluation, at the next block's start (none after the
    # run's last frame: the final checkpoint holds the network the last evaluation scored).
    # `sync_target`: copy the online network into the target network after it (None: for
    # resets and plasticity injection, as Nikishin et al. reset both networks; the others
    # leave the target to its next copy, as after any update; `agents.probes`).
    config.intervention = ml_collections.ConfigDict(
        dict(
            name="none",
            every_frames=0,
            at_switch=False,
            batch_size=64,
            sync_target=config_dict.placeholder(bool),
            options=ml_collections.ConfigDict(),
        )
    )

    config.log_every_frames = 100_000
    config.checkpoint_every_frames = 5_000_000
    config.keep_checkpoints = 2
    # A sweep (`plasticity.config_tools.resolve_variants`): name -> overrides; each its own run.
    config.variants = ml_collections.ConfigDict()
    config.variant_order = ()
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
            max_grad_norm=0.0,  # Rainbow's clip at 10; DQN Zoo's DQN has none
        )
    )
    config.evaluation.update(dict(epsilon=0.05))
    return config


FAMILIES = ("atari", "minatar")


def get_config(agent: str, family: str = "atari") -> ml_collections.ConfigDict:
    """The preset of ``agent`` ('dqn' or 'rainbow') for ``family`` ('atari' or 'minatar'), or a
    one-line ValueError."""
    presets = {"dqn": dqn_config, "rainbow": rainbow_config}
    if agent not in presets:
        raise ValueError(f"unknown agent {agent!r}: expected one of {', '.join(AGENTS)}")
    if family not in FAMILIES:
        raise ValueError(f"unknown game family {family!r}: expected one of {', '.join(FAMILIES)}")
    config = presets[agent]()
    return minatar_preset(config) if family == "minatar" else config


def minatar_preset(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """An agent preset at MinAtar scale (in place); one frame is one MinAtar step.

    Every ``*_frames`` field counts agent steps (summed over envs). Network: Young & Tian's
    MinAtar torso, conv(16, 3x3, stride 1) -> 128 units (with the preset's head: Rainbow's
    dueling C51 noisy head, DQN's plain one). One update every 4 steps, target copied every
    1,000 updates, replay 100k transitions, learning from 5,000. Rainbow: Adam 1e-4, eps
    3.125e-4 and C51's support on [-100, 100] (Obando-Ceron & Castro's MinAtar Rainbow: MinAtar's
    rewards are not clipped, and Atari's [-10, 10] would cut a good agent's discounted returns);
    DQN: the preset's centred RMSProp, epsilon 1 -> 0.05 over 50k frames. A restarted schedule
    warms up over 500 updates. Plain layers start as Flax's (LeCun-normal kernels, zero biases),
    as PureJaxRL's and most JAX MinAtar agents do: under DQN Zoo's U(+-1/sqrt(fan_in)) the DQN
    preset learned Breakout slower at this scale (return 0.60 against 1.87 after 100k steps,
    mean of 3 seeds).
    """
    config.games = ("breakout", "asterix", "freeway", "space_invaders")
    config.frames_per_game = 100_000
    config.env = ml_collections.ConfigDict(
        dict(
            num_envs=8,
            sticky_action_prob=0.1,
            # None: the full 6-action set when the run plays more than one game, else the game's.
            full_action_space=config_dict.placeholder(bool),
            # 0: gymnax's step limits (1,000; Freeway 2,500), where MinAtar has none: returns
            # are capped (`agents.minatar_env.MinAtarSuite`); a large value plays uncut episodes.
            max_episode_frames=0,
            frame_skip=1,
            stack=1,
        )
    )
    config.network.update(
        dict(
            torso="conv",
            conv_layers=((16, 3, 1),),
            hidden_sizes=(128,),
            initialization="lecun_normal",
        )
    )
    config.learner.target_update_period_frames = 4_000
    config.updates_per_frame = 0.25
    config.replay.update(dict(capacity=100_000, min_fill_fraction=0.05))
    config.exploration.decay_frames = 50_000
    if config.agent == "rainbow":
        config.optimizer.update(dict(learning_rate=1e-4, eps=3.125e-4))
        config.network.update(dict(v_min=-100.0, v_max=100.0))
    else:
        config.exploration.epsilon_end = 0.05
    config.optimizer.schedule.warmup_steps = 500
    config.evaluation = ml_collections.ConfigDict(
        dict(
            episodes=8,  # one per evaluation env
            max_frames=8 * 2_504,  # per game evaluated; unfinished episodes are not counted
            epsilon=0.05 if config.agent == "dqn" else 0.0,
            noise=True,
            fresh_reference=True,
        )
    )
    config.diagnostics.every_frames = 10_000  # (benchmarks.diagnostics_cost --loop=minatar)
    config.log_every_frames = 10_000
    config.checkpoint_every_frames = 25_000  # one compiled chunk; must divide frames_per_game
    # How the seeds run on the hardware (a relaunch may change it; results only up to rounding).
    # runs_per_batch: lax.map over seeds k at a time (1 is fastest on CPUs); 0 vmaps them all;
    # None: by platform. mesh: 'auto' spreads the seeds over every local device that divides
    # their count (nothing changes on one device), 'seed:N' over N devices, 'none' keeps them on
    # one device. cpu_products: the compiled loop's matrix products on CPUs, 'xla' (XLA's own
    # kernels), 'ynnpack' or 'auto' (XLA's for an MLP torso; `plasticity.runtime.CPU_PRODUCTS`).
    config.run = ml_collections.ConfigDict(
        dict(runs_per_batch=config_dict.placeholder(int), mesh="auto", cpu_products="auto")
    )
    return config


def smoke_config(agent: str, family: str = "atari") -> ml_collections.ConfigDict:
    """``agent``'s preset shrunk for smoke runs and CI: everything a full run does happens
    (learning starts, target copies, evaluation, checkpoints, diagnostics), only the sizes are
    small. Atari: a 2-layer conv torso, 2 envs, 2,048 frames a game (about a minute on a 2-core
    CPU, most of it compilation); MinAtar: a 4-channel conv, 2 envs, 512 frames a game."""
    config = get_config(agent, family)
    config.env.num_envs = 2
    # Cheap diagnostics alone (with effective_lr, which every run logs: `agents.probes`) keep the
    # smoke programs quick to compile.
    config.diagnostics.update(
        dict(every_frames=512, names=("weight_norm", "update_ratio"), batch_size=16)
    )
    if family == "minatar":
        config.diagnostics.every_frames = 256
        config.frames_per_game = 512
        config.network.update(dict(conv_layers=((4, 3, 2),), hidden_sizes=(16,)))
        config.replay.update(dict(capacity=1024, min_fill_fraction=0.0625))
        config.learner.target_update_period_frames = 128
        config.exploration.decay_frames = 256
        config.evaluation.update(dict(episodes=2, max_frames=2 * 500, fresh_reference=False))
        config.optimizer.schedule.warmup_steps = 8
        config.log_every_frames = 128
        config.checkpoint_every_frames = 256
        config.run.runs_per_batch = 0
        return config
    config.frames_per_game = 2048
    config.network.update(
        dict(torso="conv", conv_layers=((8, 8, 4), (8, 4, 2)), hidden_sizes=(32,))
    )
    config.replay.update(dict(capacity=512, min_fill_fraction=0.125))
    config.learner.target_update_period_frames = 256
    config.exploration.decay_frames = 1024
    config.evaluation.update(
        dict(every_frames=1024, episodes=2, max_frames=400, fresh_reference=False)
    )
    config.optimizer.schedule.warmup_steps = 8
    config.log_every_frames = 512
    config.checkpoint_every_frames = 1024
    return config


def target_update_period_updates(config: ml_collections.ConfigDict) -> int:
    """Learner updates between two target-network copies: the frame period x the replay ratio."""
    return max(1, round(config.learner.target_update_period_frames * config.updates_per_frame))


def learning_starts_transitions(config: ml_collections.ConfigDict) -> int:
    """Transitions the replay must hold before the first update (at least one batch): the fill
    fraction of the capacity the replay holds (`replay_capacity`, whole envs), so that a full
    fill is reachable."""
    return max(
        int(config.replay.min_fill_fraction * replay_capacity(config)), config.learner.batch_size
    )


def learning_starts(config: ml_collections.ConfigDict) -> int:
    """Replay items needed before the first update: the preset's fill fraction (at least one
    batch), and at least one full n-step window with a whole frame stack per env."""
    return max(
        learning_starts_transitions(config),
        config.env.num_envs * (config.learner.n_step + config.env.stack),
    )


def replay_capacity(config: ml_collections.ConfigDict) -> int:
    """Replay capacity in transitions, rounded down to a whole number per env."""
    return (config.replay.capacity // config.env.num_envs) * config.env.num_envs


def frames_per_iteration(config: ml_collections.ConfigDict) -> int:
    """Frames of one loop iteration: one agent step of every env."""
    return config.env.num_envs * config.env.frame_skip


def evaluation_num_envs(config: ml_collections.ConfigDict) -> int:
    """Envs of an evaluation: ``evaluation.num_envs`` (default ``env.num_envs``), at most one per
    episode and at most ``max_frames // max_episode_frames``. Envs play at once and share the
    frame budget, so more would leave each a share shorter than a capped episode: long
    episodes could never count, which one env playing the budget's episodes in turn (DQN Zoo's
    protocol) would count."""
    evaluation = config.evaluation
    requested = min(evaluation.num_envs or config.env.num_envs, evaluation.episodes)
    longest_fit = evaluation.max_frames // config.env.max_episode_frames
    return max(1, min(requested, longest_fit))


def check_number_ranges(config: ml_collections.ConfigDict) -> None:
    """One-line ValueErrors for numbers outside what they mean: probabilities, the discount and
    exponents in [0, 1], fractions in (0, 1], periods, counts, thresholds and coefficients >= 0
    (0: off, where it can be), the target period >= 1 frame and the priority cap > 0."""
    from plasticity.config_tools import check_range  # noqa: PLC0415

    unit_interval = {
        "learner.discount": config.learner.discount,
        "exploration.epsilon_begin": config.exploration.epsilon_begin,
        "exploration.epsilon_end": config.exploration.epsilon_end,
        "env.sticky_action_prob": config.env.sticky_action_prob,
        "evaluation.epsilon": config.evaluation.epsilon,
        "replay.importance_exponent_begin": config.replay.importance_exponent_begin,
        "replay.importance_exponent_end": config.replay.importance_exponent_end,
    }
    for field, value in unit_interval.items():
        check_range(field, value, 0.0, 1.0)
    non_negative = {
        "seed": config.seed,
        "replay.priority_exponent": config.replay.priority_exponent,
        "replay.importance_exponent_anneal_frames": config.replay.importance_exponent_anneal_frames,
        "learner.priority_epsilon": config.learner.priority_epsilon,
        "learner.huber_delta": config.learner.huber_delta,
        "exploration.decay_frames": config.exploration.decay_frames,
        "env.max_episode_frames": config.env.max_episode_frames,
        "diagnostics.every_frames": config.diagnostics.every_frames,
        "diagnostics.effective_lr_exponent": config.diagnostics.effective_lr_exponent,
        "intervention.every_frames": config.intervention.every_frames,
    }
    if config.evaluation.get("every_frames") is not None:
        non_negative["evaluation.every_frames"] = config.evaluation.every_frames
    for field, value in non_negative.items():
        check_range(field, value, 0.0)
    for field, value in (
        ("updates_per_frame", config.updates_per_frame),
        ("replay.min_fill_fraction", config.replay.min_fill_fraction),
    ):
        check_range(field, value, 0.0, 1.0, low_open=True)
    check_range("learner.priority_max", config.learner.priority_max, 0.0, low_open=True)
    check_range(
        "learner.target_update_period_frames", config.learner.target_update_period_frames, 1.0
    )


def validate_config(config: ml_collections.ConfigDict, family: str = "atari") -> None:
    """One-line ValueErrors for settings that cannot work together, before anything is built:
    the one validation path of both RL families (MinAtar adds its one-frame-a-step rule and
    equal compiled chunks)."""
    from plasticity.interventions import check_cbp_activation, check_options  # noqa: PLC0415
    from plasticity.layers import check_activation, check_norm  # noqa: PLC0415
    from plasticity.config_tools import check_conv_layers, check_layer_sizes  # noqa: PLC0415
    from plasticity.diagnostics import check_names, make_options  # noqa: PLC0415
    from plasticity.nap import check_nap_config  # noqa: PLC0415
    from plasticity.networks import check_initialization  # noqa: PLC0415
    from plasticity.optim import check_optimizer_config  # noqa: PLC0415

    if family not in FAMILIES:
        raise ValueError(f"unknown game family {family!r}: expected one of {', '.join(FAMILIES)}")
    if config.agent not in AGENTS:
        raise ValueError(f"unknown agent {config.agent!r}: expected one of {', '.join(AGENTS)}")
    if config.network.torso not in TORSOS:
        raise ValueError(
            f"unknown torso {config.network.torso!r}: expected one of {', '.join(TORSOS)}"
        )
    check_norm(config.network.norm)
    check_activation(config.network.activation)
    check_initialization(config.network.initialization)
    check_nap_config(config.network.norm, config.optimizer.nap.enabled)
    check_layer_sizes("network.hidden_sizes", config.network.hidden_sizes)
    if config.network.torso == "mlp":
        check_layer_sizes("network.mlp_sizes", config.network.mlp_sizes)
    if config.network.torso == "conv":
        check_conv_layers("network.conv_layers", config.network.conv_layers)
    check_optimizer_config(config.optimizer)
    if config.switch.restart_schedule and config.optimizer.schedule.name != "constant":
        raise ValueError(
            "switch.restart_schedule builds its own schedule (warm-up + cosine restarted at every "
            "game, from optimizer.schedule's init_value, warmup_steps and end_value): leave "
            f"optimizer.schedule.name 'constant', got {config.optimizer.schedule.name!r}"
        )
    make_options(**config.diagnostics.options.to_dict())  # even while they are off
    if config.diagnostics.every_frames > 0:
        check_names(config.diagnostics.names)
        if config.diagnostics.batch_size < 1:
            raise ValueError(
                f"diagnostics.batch_size must be >= 1, got {config.diagnostics.batch_size}"
            )
    positive = {
        "frames_per_game": config.frames_per_game,
        "cycles": config.cycles,
        "num_seeds": config.num_seeds,
        "env.num_envs": config.env.num_envs,
        "env.frame_skip": config.env.frame_skip,
        "learner.batch_size": config.learner.batch_size,
        "learner.n_step": config.learner.n_step,
        "network.num_atoms": config.network.num_atoms,
        "replay.capacity": config.replay.capacity,
        "evaluation.episodes": config.evaluation.episodes,
        "evaluation.max_frames": config.evaluation.max_frames,
        "log_every_frames": config.log_every_frames,
        "checkpoint_every_frames": config.checkpoint_every_frames,
        "keep_checkpoints": config.keep_checkpoints,
    }
    if config.evaluation.get("num_envs") is not None:
        positive["evaluation.num_envs"] = config.evaluation.num_envs
    for name, value in positive.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if not config.games:
        raise ValueError("games must name at least one game")
    exploration = config.exploration
    if not config.network.noisy and exploration.epsilon_begin == exploration.epsilon_end == 0:
        raise ValueError(
            "network.noisy=False with exploration.epsilon_begin = epsilon_end = 0: nothing would "
            "explore (a random network's greedy policy fills the replay); give an epsilon-greedy "
            "schedule, e.g. --config.exploration.epsilon_begin=1.0 "
            "--config.exploration.epsilon_end=0.01 (Rainbow without noisy nets explores so)"
        )
    if config.network.num_atoms > 1 and not config.network.v_min < config.network.v_max:
        raise ValueError(
            f"network.v_min ({config.network.v_min}) must be below v_max ({config.network.v_max})"
        )
    check_number_ranges(config)
    if config.env.max_episode_frames % config.env.frame_skip:
        raise ValueError(
            f"env.max_episode_frames ({config.env.max_episode_frames}) must be a multiple of "
            f"env.frame_skip ({config.env.frame_skip}): an agent step cut short by the cap would "
            "end its episode on the step before's frames, and bootstrap from them"
        )
    step = frames_per_iteration(config)
    for name in ("frames_per_game", "checkpoint_every_frames"):
        if config[name] % step:
            raise ValueError(
                f"{name} ({config[name]}) must be a multiple of env.num_envs x env.frame_skip = "
                f"{step}, so that games switch and checkpoints happen at exact frame counts"
            )
    slots_per_env = config.replay.capacity // config.env.num_envs
    if slots_per_env <= config.env.stack + config.learner.n_step:
        raise ValueError(
            f"replay.capacity ({config.replay.capacity}) is too small for {config.env.num_envs} "
            f"envs: each env needs more than stack + n_step = "
            f"{config.env.stack + config.learner.n_step} slots"
        )
    intervention = config.intervention
    check_options(intervention.name, intervention.options.to_dict())  # the name, then options
    if intervention.name == "cbp":
        check_cbp_activation(intervention.options.to_dict(), config.network.activation)
    if intervention.name == "plasticity_injection" and intervention.sync_target is False:
        raise ValueError(
            "intervention.sync_target=False with plasticity_injection: the old target network "
            "read through the injected head computes no network's values; leave it unset"
        )
    if intervention.name != "none" and not (
        intervention.every_frames > 0 or intervention.at_switch
    ):
        raise ValueError(
            f"intervention {intervention.name!r} never runs: set intervention.every_frames > 0 "
            "and/or intervention.at_switch=True"
        )
    if family == "minatar":
        if config.env.frame_skip != 1 or config.env.stack != 1:
            raise ValueError("MinAtar runs use env.frame_skip=1 and env.stack=1 (one frame a step)")
        chunk = min(config.checkpoint_every_frames, config.frames_per_game)
        if config.frames_per_game % chunk:
            raise ValueError(
                f"frames_per_game ({config.frames_per_game}) must be a multiple of "
                f"checkpoint_every_frames ({config.checkpoint_every_frames}): every compiled chunk "
                "between checkpoints has the same length"
            )
        if config.run.runs_per_batch is not None and config.run.runs_per_batch < 0:
            raise ValueError(f"run.runs_per_batch must be >= 0, got {config.run.runs_per_batch}")
        if config.run.cpu_products not in CPU_PRODUCTS:
            raise ValueError(
                f"run.cpu_products={config.run.cpu_products!r}: expected one of "
                f"{', '.join(CPU_PRODUCTS)}"
            )


# Launcher flags that name a config field: the same names in both RL launchers (and in the
# continual launcher where the concept is the same, `benchmarks.configs.common.NAMED_FLAGS`).
NAMED_FLAGS = {
    "games": "games",
    "cycles": "cycles",
    "frames_per_game": "frames_per_game",
    "seed": "seed",
    "num_seeds": "num_seeds",
    "norm": "network.norm",
    "nap": "optimizer.nap.enabled",
    "weight_decay": "optimizer.weight_decay",
    "num_envs": "env.num_envs",
    "fresh_reference": "evaluation.fresh_reference",
    "flush_replay_at_switch": "switch.flush_replay",
    "reset_optimizer_at_switch": "switch.reset_optimizer",
    "restart_schedule_at_switch": "switch.restart_schedule",
}


def build_config(
    family: str,
    agent: str | None,
    experiment: str | None,
    overrides: dict[str, str],
    named: dict[str, Any],
    replaced: list[str] | None = None,
) -> ml_collections.ConfigDict:
    """An RL launcher's config: the ``--experiment`` file's (or ``agent``'s preset, default
    'rainbow'), then ``--config.*`` overrides, then the named flags; both win over every
    variant's own values (one line each in ``replaced``: `plasticity.config_tools.force_fields`).
    ``--agent`` must agree with an experiment's agent."""
    from plasticity import config_tools  # noqa: PLC0415

    if experiment:
        config = config_tools.load_config_file(experiment)
        preset = get_config(
            config.get("agent") if config.get("agent") in AGENTS else "rainbow", family
        )
        kind = {"atari": "an Atari", "minatar": "a MinAtar"}[family]
        config_tools.check_config_kind(config, preset, f"--experiment={experiment}", kind)
        if agent is not None and agent != config.agent:
            raise ValueError(f"--agent={agent} contradicts the experiment's agent {config.agent}")
    else:
        config = get_config(agent or "rainbow", family)
    if "agent" in overrides:
        raise ValueError("choose the agent with --agent, not --config.agent")
    config_tools.check_each_field_given_once(NAMED_FLAGS, named, overrides)
    notes = config_tools.apply_overrides(config, overrides)
    values = {NAMED_FLAGS[name]: value for name, value in named.items() if name in NAMED_FLAGS}
    if values.get("games") is not None:
        values["games"] = tuple(values["games"])
    notes += config_tools.force_fields(config, values)
    if replaced is not None:
        replaced.extend(notes)
    return config


def expand_runs(
    config: ml_collections.ConfigDict, family: str, workdir: str
) -> list[tuple[str, ml_collections.ConfigDict]]:
    """(work dir, validated config) of every run a launch makes: one per variant (in
    ``<workdir>/<variant>`` when the config has variants), and for Atari, whose runs are one seed
    each, one per seed (``.../seed_<s>`` when ``num_seeds`` > 1). Every config is validated
    before any run starts."""
    from pathlib import Path  # noqa: PLC0415

    from plasticity import config_tools  # noqa: PLC0415

    variants = config_tools.resolve_variants(config)
    config_tools.check_some_intervention_named(
        [variant.intervention for _, variant in variants], ("every_frames", "at_switch")
    )
    runs = []
    for name, variant in variants:
        path = Path(workdir) / name if config.get("variants") else Path(workdir)
        try:
            validate_config(variant, family)
        except ValueError as error:
            prefix = f"variant {name!r}: " if config.get("variants") else ""
            raise ValueError(f"{prefix}{error}") from None
        if family == "atari" and variant.num_seeds > 1:
            for seed in range(variant.seed, variant.seed + variant.num_seeds):
                one = ml_collections.ConfigDict(variant.to_dict())
                one.seed, one.num_seeds = seed, 1
                runs.append((str(path / f"seed_{seed}"), one))
        else:
            runs.append((str(path), variant))
    return runs
