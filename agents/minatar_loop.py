"""DQN / Rainbow on MinAtar game sequences (gymnax), the whole loop compiled with XLA.

One loop iteration, for N vmapped environments of one seed: act (epsilon-greedy or noisy) on the
current observations, add the timestep to the replay, step the environments, make the learner
updates the replay ratio owes, and compute the plasticity diagnostics when they are due. A chunk
of iterations is one ``lax.scan``; seeds run as ``jit(vmap(chunk))`` (or ``lax.map`` over seeds,
faster on CPUs, see ``run.runs_per_batch``). Between chunks the host writes metrics and
checkpoints; between blocks it evaluates and applies the switch policy (`agents.sequence`).

Games and the common interface. `MinAtarSuite` holds every game of a run in one program: the
game is a traced index (``lax.switch``; unbatched over seeds, so only its branch runs), so a
4-game sequence compiles one chunk program, not four. Observations are MinAtar's boolean
10x10xC planes with each game's C channels first and zeros after them, up to the largest C of
the run's games. Sequences (more than one game) use MinAtar's full action set for every game:

    index:  0 noop  1 left  2 up  3 right  4 down  5 fire

which gymnax maps to each game as MinAtar does: actions outside a game's minimal set are no-ops.
Minimal sets (indices into the full set): asterix 0 1 2 3 4, breakout 0 1 3, freeway 0 2 4,
seaquest all six, space_invaders 0 1 3 5. A single-game run uses the game's minimal set
unless ``env.full_action_space`` is set.

Timesteps follow the dm_env convention of `agents.replay`: at a ``last`` timestep (terminated,
discount 0; or truncated at the episode step limit, discount 1) the action is ignored and the
next timestep is the ``first`` of a new episode (gymnasium's "NextStep" autoreset). Sticky
actions (``env.sticky_action_prob``, MinAtar's 0.1): each step repeats the env's previous action
with that probability. One MinAtar step is one frame: ``frames`` = ``agent_steps`` in every row.

Why game switches happen between chunks: the switch policy (flush the replay, reset optimizer
moments) and the evaluation of every game seen so far are block-level events that the host
records anyway; the chunk program only needs the game index, so it is compiled once.

The learning plan (`agents.sequence.plan_learning`) is computed on the host before the run: for
every iteration the number of updates, the exploration epsilon, the importance exponent and
whether diagnostics are due are scan inputs that are the same for all seeds, so the learner's
update loop and the diagnostics stay real (unbatched) control flow under ``vmap``.

Work dir (`plasticity.workdir`, as `agents.atari_loop`): ``config.json`` (the config and the
schedule), ``metrics.jsonl`` with rows carrying ``step`` (= updates), ``frames``, ``agent_steps``,
``updates``, ``game``, ``block``, ``visit``, ``cycle`` and ``seed``; events 'train' (every
``log_every_frames``), 'diagnostics' (every ``diagnostics.every_frames``), 'switch' (at every
switch: the policy, the next update's learning rate, the replay's items, the optimizer moments'
norm), 'eval' (the evaluation matrix, ``end_of_block`` True: after every block every game seen so
far; ``game`` is the game evaluated, ``trained_game`` the block's game, ``visit`` the evaluated
game's visits so far), 'eval_fresh' (the fresh-network reference per game: a new network from the
same initial parameters trained for one block on that game alone, ``evaluation.fresh_reference``;
its training rows are not written) and 'resume'; ``evaluation_matrix.json``
(`agents.sequence.evaluation_matrix_summary`); TensorBoard scalars (seed means) keyed by frames;
Orbax checkpoints after every chunk (``checkpoint_every_frames``). Relaunching on the work dir
resumes from the last checkpoint; all randomness lives in the checkpointed state or is derived
from (seed, block, game), so on CPU a resumed run ends bit-identical to an uninterrupted one.

Safety and devices: a NaN/Inf learner loss or parameter raises `plasticity.divergence.
DivergenceError` before the chunk's rows and checkpoint are written; ``should_stop`` (a SIGTERM
guard) ends a call after a checkpoint; ``run.mesh`` splits the seeds over the local devices
(`seed_mesh`), each device running its own seeds with no communication.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import re
import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import struct
from jax.sharding import Mesh
from ml_collections import config_dict

from agents import configs as agent_configs
from agents import sequence
from agents.learner import Learner, make_learn_step, make_learner, preprocess_observations
from agents.replay import ReplayState, replay_add, replay_init, replay_sample
from agents.sequence import GameBlock, SwitchPolicy
from plasticity import divergence
from plasticity import mesh as mesh_lib
from plasticity.checkpointing import Checkpointer
from plasticity.layers import check_activation, check_norm
from plasticity.nap import check_nap_config
from plasticity.optim import optimizer_learning_rate
from plasticity.progress import Progress
from plasticity.train_state import TrainState, map_optimizer_moments
from plasticity.workdir import WorkDir, read_metrics

# ---------------------------------------------------------------------------------------------
# Games.

GYMNAX_IDS = {
    "asterix": "Asterix-MinAtar",
    "breakout": "Breakout-MinAtar",
    "freeway": "Freeway-MinAtar",
    "seaquest": "Seaquest-MinAtar",
    "space_invaders": "SpaceInvaders-MinAtar",
}
MINATAR_GAMES = tuple(sorted(GYMNAX_IDS))
FULL_ACTION_SET = ("noop", "left", "up", "right", "down", "fire")
MINIMAL_ACTION_SETS = {
    "asterix": (0, 1, 2, 3, 4),
    "breakout": (0, 1, 3),
    "freeway": (0, 2, 4),
    "seaquest": (0, 1, 2, 3, 4, 5),
    "space_invaders": (0, 1, 3, 5),
}
CHANNELS = {"asterix": 4, "breakout": 4, "freeway": 7, "seaquest": 10, "space_invaders": 6}
SCREEN = 10
DEFAULT_SEQUENCE = ("breakout", "asterix", "freeway", "space_invaders")


def _squash(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower().replace("minatar", ""))


def resolve_minatar_game(name: str) -> str:
    """The canonical name of a MinAtar game ('Breakout-MinAtar', 'SpaceInvaders' -> ...).

    An unknown name raises a one-line ValueError listing close matches.
    """
    squashed = {_squash(game): game for game in MINATAR_GAMES}
    key = _squash(str(name))
    if key in squashed:
        return squashed[key]
    close = difflib.get_close_matches(key, list(squashed), n=3, cutoff=0.5)
    hint = f"close matches: {', '.join(squashed[c] for c in close)}; " if close else ""
    raise ValueError(
        f"unknown MinAtar game {name!r}: {hint}known games: {', '.join(MINATAR_GAMES)}"
    )


class Timestep(NamedTuple):
    """One timestep of N envs (leading axis), dm_env style (see the module docstring)."""

    observation: jax.Array  # (N, 10, 10, C) bool, channels padded with zeros
    first: jax.Array  # (N,) bool
    last: jax.Array  # (N,) bool
    reward: jax.Array  # (N,) float32, received on arriving at this observation
    discount: jax.Array  # (N,) float32, 0 at termination, else 1


@struct.dataclass
class EnvCarry:
    """The environments of every game of a suite, and per-env episode bookkeeping."""

    states: tuple[Any, ...]  # one batched gymnax state per game of the suite
    needs_reset: jax.Array  # (N,) bool: the last emitted timestep was ``last``
    last_action: jax.Array  # (N,) int32: the action the env took last (sticky actions)
    episode_return: jax.Array  # (N,) float32: raw return of the running episode so far
    episode_steps: jax.Array  # (N,) int32: steps of the running episode so far


def _strong(tree: Any) -> Any:
    """Leaves without weak types (gymnax mixes Python scalars in its states)."""
    return jax.tree.map(lambda x: jnp.asarray(x).astype(jnp.asarray(x).dtype), tree)


class MinAtarSuite:
    """The games of a run behind one interface: common observation planes and action set.

    Args:
      games: canonical game names (`resolve_minatar_game`), in the order of their indices.
      full_action_space: every game takes MinAtar's six actions (required for several games).
      sticky_action_prob: probability that an env repeats its previous action at a step.
      max_episode_steps: truncation limit in steps; 0 keeps each game's own (1,000; 2,500 for
        freeway).
    """

    def __init__(
        self,
        games: Sequence[str],
        full_action_space: bool = True,
        sticky_action_prob: float = 0.1,
        max_episode_steps: int = 0,
    ):
        import gymnax  # local: importing it takes seconds

        self.games = tuple(resolve_minatar_game(game) for game in games)
        if not self.games or len(set(self.games)) != len(self.games):
            raise ValueError(f"a suite needs distinct games, got {list(games)}")
        action_counts = {len(MINIMAL_ACTION_SETS[game]) for game in self.games}
        if not full_action_space and len(self.games) > 1:
            raise ValueError(
                f"games {', '.join(self.games)} have different action sets: use the full action "
                "set (env.full_action_space=True) to play them with one network"
            )
        if not 0.0 <= sticky_action_prob <= 1.0:
            raise ValueError(f"sticky_action_prob must be in [0, 1], got {sticky_action_prob}")
        self.full_action_space = bool(full_action_space)
        self.sticky_action_prob = float(sticky_action_prob)
        self.num_actions = len(FULL_ACTION_SET) if full_action_space else action_counts.pop()
        self.channels = max(CHANNELS[game] for game in self.games)
        self.envs, self.params = [], []
        for game in self.games:
            env, params = gymnax.make(
                GYMNAX_IDS[game], use_minimal_action_set=not full_action_space
            )
            self.envs.append(env)
            self.params.append(params)
        self.step_limits = tuple(
            int(max_episode_steps) if max_episode_steps > 0 else int(p.max_steps_in_episode)
            for p in self.params
        )

    @property
    def observation_spec(self) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct((SCREEN, SCREEN, self.channels), jnp.bool_)

    def game_index(self, game: str) -> int:
        return self.games.index(resolve_minatar_game(game))

    def _planes(self, obs: jax.Array) -> jax.Array:
        obs = obs.astype(jnp.bool_)
        missing = self.channels - obs.shape[-1]
        return jnp.pad(obs, [(0, 0)] * (obs.ndim - 1) + [(0, missing)])

    def init(self, num_envs: int) -> EnvCarry:
        """Envs of every game waiting for a reset: the first `step` (or `begin`) starts episodes.

        The game states are zeros of the right structure (a reset replaces them before use), so
        no reset code is compiled into programs that only create envs.
        """
        states = []
        for env, params in zip(self.envs, self.params):
            keys = jax.ShapeDtypeStruct((num_envs,), jax.random.key(0).dtype)
            shapes = jax.eval_shape(jax.vmap(env.reset_env, in_axes=(0, None)), keys, params)[1]
            steps = jax.eval_shape(
                jax.vmap(env.step_env, in_axes=(0, 0, 0, None)),
                keys,
                shapes,
                jax.ShapeDtypeStruct((num_envs,), jnp.int32),
                params,
            )[1]
            states.append(jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), steps))
        return EnvCarry(
            states=tuple(states),
            needs_reset=jnp.ones((num_envs,), jnp.bool_),
            last_action=jnp.zeros((num_envs,), jnp.int32),
            episode_return=jnp.zeros((num_envs,), jnp.float32),
            episode_steps=jnp.zeros((num_envs,), jnp.int32),
        )

    def begin(self, carry: EnvCarry, game_index: jax.Array, key: jax.Array):
        """Starts a new episode in every env of game ``game_index``: (carry, first timestep)."""
        carry = carry.replace(needs_reset=jnp.ones_like(carry.needs_reset))
        return self.step(carry, game_index, jnp.zeros_like(carry.last_action), key)

    def step(
        self, carry: EnvCarry, game_index: jax.Array, actions: jax.Array, key: jax.Array
    ) -> tuple[EnvCarry, Timestep]:
        """One step of every env of game ``game_index`` (a reset where the last one was last)."""
        num_envs = carry.needs_reset.shape[0]
        sticky_key, env_key = jax.random.split(key)
        repeat = jax.random.bernoulli(sticky_key, self.sticky_action_prob, (num_envs,))
        actions = jnp.where(repeat, carry.last_action, actions.astype(jnp.int32))
        keys = jax.random.split(env_key, 2 * num_envs).reshape(num_envs, 2)
        needs_reset = carry.needs_reset

        def branch(g: int):
            env, params, limit = self.envs[g], self.params[g], self.step_limits[g]

            def play(states):
                step = jax.vmap(env.step_env, in_axes=(0, 0, 0, None))
                obs, state, reward, terminated, _ = step(keys[:, 0], states[g], actions, params)
                state = _strong(state)
                reset_obs, reset_state = jax.vmap(env.reset_env, in_axes=(0, None))(
                    keys[:, 1], params
                )
                reset_state = jax.tree.map(lambda r, s: r.astype(s.dtype), reset_state, state)

                def pick(reset_value, step_value):
                    mask = needs_reset.reshape((num_envs,) + (1,) * (step_value.ndim - 1))
                    return jnp.where(mask, reset_value, step_value)

                new_state = jax.tree.map(pick, reset_state, state)
                planes = self._planes(pick(reset_obs, obs))
                truncated = state.time >= limit
                new_states = states[:g] + (new_state,) + states[g + 1 :]
                return (
                    new_states,
                    planes,
                    reward.astype(jnp.float32),
                    terminated.astype(jnp.bool_),
                    truncated.astype(jnp.bool_),
                )

            return play

        branches = [branch(g) for g in range(len(self.games))]
        if len(branches) == 1:
            outputs = branches[0](carry.states)
        else:
            outputs = jax.lax.switch(game_index, branches, carry.states)
        states, planes, reward, terminated, truncated = outputs
        first = needs_reset
        last = ~first & (terminated | truncated)
        reward = jnp.where(first, 0.0, reward)
        timestep = Timestep(
            observation=planes,
            first=first,
            last=last,
            reward=reward,
            discount=jnp.where(first | ~terminated, 1.0, 0.0).astype(jnp.float32),
        )
        carry = EnvCarry(
            states=states,
            needs_reset=last,
            last_action=jnp.where(first, 0, actions),
            episode_return=jnp.where(first, 0.0, carry.episode_return + reward),
            episode_steps=jnp.where(first, 0, carry.episode_steps + 1),
        )
        return carry, timestep


@functools.lru_cache(maxsize=8)
def make_suite(
    games: tuple[str, ...],
    full_action_space: bool,
    sticky_action_prob: float,
    max_episode_steps: int = 0,
) -> MinAtarSuite:
    """A cached `MinAtarSuite` (its envs are static parts of compiled programs)."""
    return MinAtarSuite(games, full_action_space, sticky_action_prob, max_episode_steps)


# ---------------------------------------------------------------------------------------------
# Config.


def minatar_config(agent: str = "rainbow") -> ml_collections.ConfigDict:
    """The agent preset of `agents.configs` at MinAtar scale; every field, with defaults.

    One frame is one MinAtar step, so every ``*_frames`` field counts agent steps (summed over
    envs). Network: Young & Tian's MinAtar torso, conv(16, 3x3, stride 1) -> 128 units (with the
    preset's head: Rainbow's dueling C51 noisy head, DQN's plain one). One update every 4 steps,
    target copied every 1,000 updates, replay 100k transitions, learning from 5,000. Rainbow:
    Adam 1e-4, eps 3.125e-4 (Obando-Ceron & Castro's MinAtar Rainbow); DQN: the preset's centred
    RMSProp, epsilon 1 -> 0.05 over 50k frames. ``switch`` holds the switch policy
    (`agents.sequence.SwitchPolicy`); ``optimizer.schedule`` the warm-up and end values used when
    the schedule restarts at switches (NaP's 1e-8 and 1e-6, 500 warm-up updates).
    """
    config = agent_configs.get_config(agent)
    config.frames_per_game = 100_000
    config.num_seeds = 1
    config.env = ml_collections.ConfigDict(
        dict(
            num_envs=8,
            sticky_action_prob=0.1,
            # None: the full 6-action set when the run plays more than one game, else the game's.
            full_action_space=config_dict.placeholder(bool),
            max_episode_frames=0,  # 0: each game's own step limit
            frame_skip=1,
            stack=1,
        )
    )
    config.network.update(dict(torso="conv", conv_layers=((16, 3, 1),), hidden_sizes=(128,)))
    config.learner.target_update_period_frames = 4_000
    config.updates_per_frame = 0.25
    config.replay.update(dict(capacity=100_000, min_fill_fraction=0.05))
    config.exploration.decay_frames = 50_000
    if agent == "rainbow":
        config.optimizer.update(dict(learning_rate=1e-4, eps=3.125e-4))
    else:
        config.exploration.epsilon_end = 0.05
    config.optimizer.schedule.update(dict(warmup_steps=500, init_value=1e-8, end_value=1e-6))
    config.switch = ml_collections.ConfigDict(
        dict(flush_replay=False, reset_optimizer=False, restart_schedule=False)
    )
    config.evaluation = ml_collections.ConfigDict(
        dict(
            episodes=8,  # one per evaluation env
            max_frames=8 * 2_504,  # per game evaluated; unfinished episodes are not counted
            epsilon=0.05 if agent == "dqn" else 0.0,
            noise=True,
            fresh_reference=True,
        )
    )
    config.diagnostics.every_frames = 0
    del config["intervention"]
    config.log_every_frames = 10_000
    config.checkpoint_every_frames = 25_000  # one compiled chunk; must divide frames_per_game
    config.keep_checkpoints = 2
    # lax.map over seeds k at a time (1 is fastest on CPUs); 0 vmaps them all; None: by platform.
    # mesh: 'auto' spreads the seeds over every local device that divides their count (nothing
    # changes on one device), 'seed:N' over N devices, 'none' keeps them on one device.
    config.run = ml_collections.ConfigDict(
        dict(runs_per_batch=config_dict.placeholder(int), mesh="auto")
    )
    return config


def smoke_minatar_config(agent: str = "dqn") -> ml_collections.ConfigDict:
    """``agent``'s MinAtar preset shrunk for tests: a 4-channel conv, 2 envs, 512 frames a game."""
    config = minatar_config(agent)
    config.frames_per_game = 512
    config.env.num_envs = 2
    config.network.update(dict(conv_layers=((4, 3, 2),), hidden_sizes=(16,)))
    config.replay.update(dict(capacity=1024, min_fill_fraction=0.0625))
    config.learner.target_update_period_frames = 128
    config.exploration.decay_frames = 256
    config.evaluation.update(dict(episodes=2, max_frames=2 * 500, fresh_reference=False))
    config.optimizer.schedule.warmup_steps = 8
    config.log_every_frames = 128
    config.checkpoint_every_frames = 256
    config.diagnostics.update(dict(names=("weight_norm", "update_ratio"), batch_size=16))
    config.run.runs_per_batch = 0
    return config


def validate_minatar_config(config: ml_collections.ConfigDict) -> None:
    """One-line ValueErrors for settings that cannot work, before anything is built."""
    if config.agent not in agent_configs.AGENTS:
        raise ValueError(
            f"unknown agent {config.agent!r}: expected one of {', '.join(agent_configs.AGENTS)}"
        )
    if config.network.torso not in agent_configs.TORSOS:
        raise ValueError(f"unknown torso {config.network.torso!r}")
    check_norm(config.network.norm)
    check_activation(config.network.activation)
    check_nap_config(config.network.norm, config.optimizer.nap.enabled)
    positive = {
        "frames_per_game": config.frames_per_game,
        "num_seeds": config.num_seeds,
        "env.num_envs": config.env.num_envs,
        "learner.batch_size": config.learner.batch_size,
        "learner.n_step": config.learner.n_step,
        "network.num_atoms": config.network.num_atoms,
        "replay.capacity": config.replay.capacity,
        "evaluation.episodes": config.evaluation.episodes,
        "evaluation.max_frames": config.evaluation.max_frames,
        "log_every_frames": config.log_every_frames,
        "checkpoint_every_frames": config.checkpoint_every_frames,
    }
    for name, value in positive.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if config.env.frame_skip != 1 or config.env.stack != 1:
        raise ValueError("MinAtar runs use env.frame_skip=1 and env.stack=1 (one frame a step)")
    if not 0.0 < config.updates_per_frame <= 1.0:
        raise ValueError(f"updates_per_frame must be in (0, 1], got {config.updates_per_frame}")
    if not 0.0 <= config.env.sticky_action_prob <= 1.0:
        raise ValueError(
            f"env.sticky_action_prob must be in [0, 1], got {config.env.sticky_action_prob}"
        )
    if config.network.num_atoms > 1 and not config.network.v_min < config.network.v_max:
        raise ValueError("network.v_min must be below network.v_max")
    num_envs = config.env.num_envs
    chunk = chunk_frames(config)
    if config.frames_per_game % num_envs or chunk % num_envs or config.frames_per_game % chunk:
        raise ValueError(
            f"frames_per_game ({config.frames_per_game}) must be a multiple of "
            f"checkpoint_every_frames ({config.checkpoint_every_frames}), itself a multiple of "
            f"env.num_envs ({num_envs}): every chunk between checkpoints has the same length"
        )
    if config.replay.capacity // num_envs <= config.env.stack + config.learner.n_step:
        raise ValueError(
            f"replay.capacity ({config.replay.capacity}) is too small for {num_envs} envs: "
            f"each env needs more than stack + n_step = "
            f"{config.env.stack + config.learner.n_step} slots"
        )
    if config.run.runs_per_batch is not None and config.run.runs_per_batch < 0:
        raise ValueError(f"run.runs_per_batch must be >= 0, got {config.run.runs_per_batch}")
    seed_mesh(config)  # a mesh that does not fit the devices or the seeds is a one-line error


def chunk_frames(config: ml_collections.ConfigDict) -> int:
    """Frames of one compiled chunk: ``checkpoint_every_frames``, at most one block."""
    return min(int(config.checkpoint_every_frames), int(config.frames_per_game))


def make_blocks(games: Sequence[str], frames_per_game: int, cycles: int = 1) -> list[GameBlock]:
    """The schedule of a MinAtar sequence (`agents.sequence.make_schedule`, names resolved)."""
    return sequence.make_schedule(games, frames_per_game, cycles, resolve=resolve_minatar_game)


def uses_full_action_space(config: ml_collections.ConfigDict, blocks: Sequence[GameBlock]) -> bool:
    """``env.full_action_space``, or when unset: whether the run plays more than one game."""
    if config.env.full_action_space is not None:
        return bool(config.env.full_action_space)
    return len(sequence.distinct_games(blocks)) > 1


def learning_starts(config: ml_collections.ConfigDict) -> int:
    """Replay items needed before the first update (as `agents.atari_loop`)."""
    return max(
        agent_configs.learning_starts_transitions(config),
        config.env.num_envs * (config.learner.n_step + config.env.stack),
    )


def replay_capacity(config: ml_collections.ConfigDict) -> int:
    return (config.replay.capacity // config.env.num_envs) * config.env.num_envs


def seed_mesh(config: ml_collections.ConfigDict) -> Mesh | None:
    """The device mesh the seeds are split over (``run.mesh``), or None for one device.

    Only a ``seed`` axis: seeds are independent runs, so each device plays and learns its own
    seeds with no communication (`plasticity.mesh.over_leading_axis`), and results do not
    depend on the mesh. A run is one process: the mesh spans this process's devices.
    """
    spec = str(config.run.get("mesh", "none") or "none")
    if spec == "none":
        return None
    mesh = mesh_lib.make_mesh(spec, jax.local_devices(), num_runs=int(config.num_seeds))
    if tuple(mesh.axis_names) != (mesh_lib.SEED_AXIS,):
        raise ValueError(f"run.mesh {spec!r}: MinAtar runs split only a 'seed' axis")
    if config.num_seeds % mesh.size:
        raise ValueError(
            f"run.mesh {spec!r} puts {mesh.size} devices on the seed axis, which does not divide "
            f"num_seeds={config.num_seeds}"
        )
    return mesh if mesh.size > 1 else None


def runs_per_batch(config: ml_collections.ConfigDict) -> int:
    """0 (vmap every seed) on GPUs and TPUs, 1 (one seed at a time) on CPUs, unless configured."""
    if config.run.runs_per_batch is not None:
        return int(config.run.runs_per_batch)
    return 1 if jax.default_backend() == "cpu" else 0


# ---------------------------------------------------------------------------------------------
# The compiled agent.


@struct.dataclass
class LoopState:
    """Everything one seed's loop carries: learner, replay, environments, current timestep, key."""

    train_state: TrainState
    replay: ReplayState
    env: EnvCarry
    timestep: Timestep  # the newest timestep, not yet in the replay
    rng: jax.Array


LEARNER_SCALARS = (
    "loss",
    "q_mean",
    "q_taken_mean",
    "q_max_mean",
    "td_abs_mean",
    "grad_norm",
    "learning_rate",
)

_EVAL_STREAM = 7


class MinAtarAgent(NamedTuple):
    """The jitted programs of a MinAtar run; every function takes and returns seed-batched state.

    * ``init(seeds) -> LoopState``: seed s gets ``jax.random.key(seed)``'s network, replay, envs.
    * ``place(state) -> state``: the state on the run's devices (a restored checkpoint's).
    * ``start_block(state, game_index, policy) -> state``: the switch policy
      (`agents.sequence.apply_switch_policy`, ``policy`` static; a no-op before the first block),
      then new episodes of the block's game.
    * ``moments_norm(state) -> (seeds,)``: global norm of the optimizer's moments.
    * ``run_chunk(state, game_index, plan) -> (state, outputs)``: a ``lax.scan`` over the plan's
      iterations (``epsilon``, ``importance_exponent``, ``updates``, ``diagnose``, each (T,),
      shared by all seeds). Outputs, with leading axes (seeds, T): ``ended``, ``returns``,
      ``lengths`` (per env, at episode ends), ``learner`` (sums over the iteration's updates of
      `LEARNER_SCALARS`) and ``diagnostics`` (values where ``diagnose``, zeros elsewhere).
      The state is donated.
    * ``evaluate(params, game_index, seeds, salt) -> (returns, finished)``, each (seeds,
      episodes): one episode per evaluation env, with ``evaluation.epsilon`` and noise.
    """

    config: ml_collections.ConfigDict
    suite: MinAtarSuite
    learner: Learner
    init: Callable[..., LoopState]
    place: Callable[[LoopState], LoopState]
    start_block: Callable[..., LoopState]
    moments_norm: Callable[[LoopState], jax.Array]
    run_chunk: Callable[..., tuple[LoopState, dict[str, Any]]]
    evaluate: Callable[..., tuple[jax.Array, jax.Array]]


def _over_seeds(fn: Callable, per_batch: int, mesh: Mesh | None = None) -> Callable:
    """``fn(state, *shared)`` over the leading (seed) axis of ``state``: vmap, or lax.map; with a
    mesh, each device maps over its own seeds."""
    if mesh is not None:
        return mesh_lib.over_leading_axis(fn, mesh, 1, runs_per_batch=per_batch)
    if per_batch == 0:
        return lambda state, *shared: jax.vmap(lambda s: fn(s, *shared))(state)
    return lambda state, *shared: jax.lax.map(lambda s: fn(s, *shared), state, batch_size=per_batch)


# Fields that only the host-side plan reads: runs differing in them share compiled programs.
_HOST_ONLY_FIELDS = (
    "replay.min_fill_fraction",
    "replay.importance_exponent_begin",
    "replay.importance_exponent_end",
    "replay.importance_exponent_anneal_frames",
    "evaluation.fresh_reference",
)


def _compiled_key(config: ml_collections.ConfigDict) -> str:
    """The JSON of the config sections the compiled programs read."""
    sections = ("agent", "network", "learner", "optimizer", "replay", "updates_per_frame")
    sections += ("env", "evaluation", "diagnostics", "run")
    picked = json.loads(
        json.dumps({name: config[name] for name in sections}, default=lambda value: value.to_dict())
    )
    for field in _HOST_ONLY_FIELDS:
        section, name = field.split(".")
        picked[section].pop(name, None)
    return json.dumps(picked, sort_keys=True)


def make_agent(
    config: ml_collections.ConfigDict, games: Sequence[str], full_action_space: bool = True
) -> MinAtarAgent:
    """The compiled programs for ``config`` playing ``games`` (cached on what shapes them)."""
    games = tuple(resolve_minatar_game(game) for game in games)
    return _make_agent(_compiled_key(config), games, bool(full_action_space), seed_mesh(config))


@functools.lru_cache(maxsize=16)
def _make_agent(
    config_json: str, games: tuple[str, ...], full_action_space: bool, mesh: Mesh | None
) -> MinAtarAgent:
    config = ml_collections.ConfigDict(json.loads(config_json))
    env = config.env
    suite = make_suite(
        games, full_action_space, float(env.sticky_action_prob), int(env.max_episode_frames)
    )
    learner = make_learner(config, suite.num_actions)
    learn_step = make_learn_step(learner, config)
    num_envs = int(env.num_envs)
    capacity = replay_capacity(config)
    spec = suite.observation_spec
    per_batch = runs_per_batch(config)
    optimizer_config = ml_collections.ConfigDict(config.optimizer)
    diagnose_fn = _diagnostics(config, learner)
    evaluation = config.evaluation

    def empty_timestep(num_envs: int) -> Timestep:
        """A placeholder until the envs' first reset."""
        return Timestep(
            observation=jnp.zeros((num_envs,) + spec.shape, jnp.bool_),
            first=jnp.ones((num_envs,), jnp.bool_),
            last=jnp.zeros((num_envs,), jnp.bool_),
            reward=jnp.zeros((num_envs,), jnp.float32),
            discount=jnp.ones((num_envs,), jnp.float32),
        )

    def init_one(seed: jax.Array) -> LoopState:
        init_key, loop_key = jax.random.split(jax.random.key(seed))
        train_state = learner.init(init_key, spec)
        replay = replay_init(
            capacity,
            num_envs,
            spec.shape,
            stack_size=1,
            max_n_step=int(config.learner.n_step),
            priority_exponent=float(config.replay.priority_exponent),
            frame_dtype=jnp.bool_,
        )
        carry = suite.init(num_envs)
        return LoopState(train_state, replay, carry, empty_timestep(num_envs), loop_key)

    def start_one(state: LoopState, game_index: jax.Array, policy: SwitchPolicy) -> LoopState:
        # At the first block the policy finds an empty replay and a fresh optimizer: a no-op.
        train_state, replay = sequence.apply_switch_policy(state.train_state, state.replay, policy)
        rng, key = jax.random.split(state.rng)
        carry, timestep = suite.begin(state.env, game_index, key)
        return LoopState(train_state, replay, carry, timestep, rng)

    def learn(train_state, replay, previous, count, key, beta):
        """``count`` updates; also returns the parameters before the last one (or ``previous``)."""
        zeros = {name: jnp.zeros((), jnp.float32) for name in LEARNER_SCALARS}

        def one(i, carry):
            train_state, replay, _, sums = carry
            before = train_state.params
            train_state, replay, aux = learn_step(
                train_state, replay, jax.random.fold_in(key, i), beta
            )
            sums = {name: sums[name] + aux[name].astype(jnp.float32) for name in LEARNER_SCALARS}
            return train_state, replay, before, sums

        return jax.lax.fori_loop(0, count, one, (train_state, replay, previous, zeros))

    def chunk_one(state: LoopState, game_index: jax.Array, plan: dict[str, jax.Array]):
        def body(carry: tuple[LoopState, Any], step: dict[str, jax.Array]):
            state, previous = carry
            rng, act_key, env_key, learn_key, diagnose_key = jax.random.split(state.rng, 5)
            timestep = state.timestep
            params = state.train_state.params
            actions = learner.act(params, timestep.observation, act_key, step["epsilon"])
            replay = replay_add(
                state.replay,
                timestep.observation,
                actions,
                timestep.reward,
                timestep.discount,
                timestep.first,
                timestep.last,
            )
            carry, timestep = suite.step(state.env, game_index, actions, env_key)
            train_state, replay, previous, sums = learn(
                state.train_state,
                replay,
                previous,
                step["updates"],
                learn_key,
                step["importance_exponent"],
            )
            outputs = {
                "ended": timestep.last,
                "returns": carry.episode_return,
                "lengths": carry.episode_steps,
                "learner": sums,
            }
            if diagnose_fn is not None:
                arguments = (train_state, replay, previous, diagnose_key)
                zeros = jax.tree.map(
                    lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(diagnose_fn, *arguments)
                )
                outputs["diagnostics"] = jax.lax.cond(
                    step["diagnose"], diagnose_fn, lambda *_: zeros, *arguments
                )
            state = LoopState(train_state, replay, carry, timestep, rng)
            return (state, previous), outputs

        # Update ratios compare with the parameters before the newest update of the chunk.
        (state, _), outputs = jax.lax.scan(body, (state, state.train_state.params), plan)
        return state, outputs

    def evaluate_one(params: Any, game_index: jax.Array, seed: jax.Array, salt: jax.Array):
        episodes = int(evaluation.episodes)
        max_steps = max(1, int(evaluation.max_frames) // episodes) + 1  # + the reset step
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), _EVAL_STREAM), salt)
        deterministic = not bool(evaluation.noise)

        def running(loop):
            step, _, _, finished, _ = loop
            return (step < max_steps) & ~jnp.all(finished)

        def play(loop):
            # The first step resets every env (its actions are ignored) and emits first timesteps.
            step, carry, timestep, finished, returns = loop
            act_key, env_key = jax.random.split(jax.random.fold_in(key, step))
            actions = learner.act(
                params, timestep.observation, act_key, evaluation.epsilon, deterministic
            )
            carry, timestep = suite.step(carry, game_index, actions, env_key)
            ends = timestep.last & ~finished
            returns = jnp.where(ends, carry.episode_return, returns)
            return step + 1, carry, timestep, finished | timestep.last, returns

        start = (
            jnp.zeros((), jnp.int32),
            suite.init(episodes),
            empty_timestep(episodes),
            jnp.zeros((episodes,), jnp.bool_),
            jnp.zeros((episodes,), jnp.float32),
        )
        _, _, _, finished, returns = jax.lax.while_loop(running, play, start)
        return returns, finished

    def evaluate_seeds(params, game_index, seeds, salt):
        batched = _over_seeds(lambda p_s, g, t: evaluate_one(p_s[0], g, p_s[1], t), per_batch, mesh)
        return batched((params, seeds), game_index, salt)

    def start_seeds(state: LoopState, game_index: jax.Array, policy: SwitchPolicy) -> LoopState:
        return _over_seeds(lambda s, g: start_one(s, g, policy), per_batch, mesh)(state, game_index)

    placed = None if mesh is None else mesh_lib.leading_axis_sharding(mesh)
    return MinAtarAgent(
        config=config,
        suite=suite,
        learner=learner,
        init=jax.jit(jax.vmap(init_one), out_shardings=placed),
        place=(lambda state: state) if placed is None else (lambda s: jax.device_put(s, placed)),
        start_block=jax.jit(start_seeds, static_argnums=2),
        moments_norm=jax.jit(jax.vmap(lambda state: moments_norm(state.train_state))),
        run_chunk=jax.jit(_over_seeds(chunk_one, per_batch, mesh), donate_argnums=0),
        evaluate=jax.jit(evaluate_seeds),
    )


def moments_norm(train_state: TrainState) -> jax.Array:
    """Global norm of the optimizer's moments (mu, nu, traces): 0 right after they are reset."""
    squares = []
    map_optimizer_moments(
        train_state.opt_state,
        train_state.params,
        lambda tree: squares.extend(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)),
    )
    return jnp.sqrt(sum(squares, jnp.zeros([], jnp.float32)))


def _diagnostics(config: ml_collections.ConfigDict, learner: Learner) -> Callable | None:
    """fn(train_state, replay, previous_params, key) -> metrics on a replay batch, or None."""
    settings = config.diagnostics
    if settings.every_frames <= 0:
        return None
    from plasticity.diagnostics import make_diagnostics_fn

    def loss_fn(params, inputs, targets):
        batch = {**targets["batch"], "obs_tm1": inputs}
        loss, _ = learner.loss(
            params, targets["target_params"], batch, targets["weights"], targets["rng"]
        )
        return loss

    metrics_fn = make_diagnostics_fn(
        learner.network,
        loss_fn,
        tuple(settings.names),
        apply_kwargs=lambda key: {"rngs": {"noise": key}},
    )
    optimizer_config = ml_collections.ConfigDict(config.optimizer)
    batch_size = int(settings.batch_size)
    n_step, discount = int(config.learner.n_step), float(config.learner.discount)

    def diagnose(train_state: TrainState, replay: ReplayState, previous: Any, key: jax.Array):
        sample_key, loss_key, metrics_key = jax.random.split(key, 3)
        batch, _ = replay_sample(replay, sample_key, batch_size, n_step, discount)
        targets = {
            "batch": {name: value for name, value in batch.items() if name != "obs_tm1"},
            "target_params": train_state.extra["target_params"],
            "weights": jnp.ones((batch_size,), jnp.float32),
            "rng": loss_key,
        }
        learning_rate = optimizer_learning_rate(optimizer_config, train_state.step)
        metrics = metrics_fn(
            train_state.params,
            previous,
            preprocess_observations(batch["obs_tm1"]),
            targets,
            metrics_key,
            learning_rate,
        )
        return {name: jnp.asarray(value, jnp.float32) for name, value in metrics.items()}

    return diagnose


# ---------------------------------------------------------------------------------------------
# Plans.


@dataclasses.dataclass
class Segment:
    """One independent run inside a `train` call: the sequence, or one fresh-network reference.

    Every segment starts from the seeds' initial networks (common random numbers), plays its
    blocks with its own learning plan and, for the sequence, its own learning-rate schedule.
    """

    name: str
    blocks: list[GameBlock]
    plan: sequence.LearningPlan
    config: ml_collections.ConfigDict  # with the segment's optimizer schedule
    epsilon: np.ndarray  # (T,) float32
    importance_exponent: np.ndarray  # (T,) float32
    diagnose: np.ndarray  # (T,) bool
    chunk_iterations: int

    @property
    def is_reference(self) -> bool:
        return self.name != "sequence"

    @property
    def total_frames(self) -> int:
        return sum(block.frames for block in self.blocks)

    def chunks_in_block(self, block: int) -> int:
        return self.blocks[block].frames // (self.chunk_iterations * self.num_envs)

    @property
    def num_envs(self) -> int:
        return int(self.config.env.num_envs)

    def chunk_slice(self, block: int, chunk: int) -> slice:
        start = int(self.plan.block_first_iteration[block]) + chunk * self.chunk_iterations
        return slice(start, start + self.chunk_iterations)

    def chunk_plan(self, block: int, chunk: int) -> dict[str, np.ndarray]:
        where = self.chunk_slice(block, chunk)
        return {
            "epsilon": self.epsilon[where],
            "importance_exponent": self.importance_exponent[where],
            "updates": self.plan.updates[where],
            "diagnose": self.diagnose[where],
        }


def _crossings(frames_after: np.ndarray, step: int, period: int) -> np.ndarray:
    """Whether a multiple of ``period`` lies in (frames after - step, frames after]."""
    if period <= 0:
        return np.zeros(frames_after.shape, bool)
    return (frames_after // period) > ((frames_after - step) // period)


def plan_segment(
    name: str, config: ml_collections.ConfigDict, blocks: Sequence[GameBlock]
) -> Segment:
    """The learning plan, exploration, importance exponent and diagnostics flags of a segment."""
    policy = SwitchPolicy.from_config(config.switch)
    num_envs = int(config.env.num_envs)
    starts = learning_starts(config)
    plan = sequence.plan_learning(
        [block.frames // num_envs for block in blocks],
        items_per_iteration=num_envs,
        frames_per_iteration=num_envs,
        learning_starts=starts,
        capacity=replay_capacity(config),
        updates_per_frame=float(config.updates_per_frame),
        flush_at_switch=policy.flush_replay,
    )
    segment_config = ml_collections.ConfigDict(config.to_dict())
    if policy.restart_schedule:
        segment_config.optimizer = sequence.restarted_schedule_config(
            config.optimizer, plan.block_start_updates, plan.total_updates
        )
    exploration = config.exploration
    epsilon = np.where(
        plan.learning_before,
        sequence.linear_values(
            plan.learning_frames_before,
            exploration.epsilon_begin,
            exploration.epsilon_end,
            exploration.decay_frames,
        ),
        exploration.epsilon_begin,
    )
    total_frames = sum(block.frames for block in blocks)
    learning_now = plan.replay_items >= starts
    frames_after = plan.learning_frames_before + learning_now * num_envs
    anneal = config.replay.importance_exponent_anneal_frames or total_frames
    beta = sequence.linear_values(
        frames_after,
        config.replay.importance_exponent_begin,
        config.replay.importance_exponent_end,
        anneal,
    )
    run_frames = (np.arange(len(plan.updates), dtype=np.int64) + 1) * num_envs
    diagnose = _crossings(run_frames, num_envs, int(config.diagnostics.every_frames)) & learning_now
    diagnose &= (plan.updates_before + plan.updates) > 0
    return Segment(
        name=name,
        blocks=list(blocks),
        plan=plan,
        config=segment_config,
        epsilon=epsilon.astype(np.float32),
        importance_exponent=beta.astype(np.float32),
        diagnose=diagnose,
        chunk_iterations=chunk_frames(config) // num_envs,
    )


def plan_run(config: ml_collections.ConfigDict, blocks: Sequence[GameBlock]) -> list[Segment]:
    """The sequence, then (``evaluation.fresh_reference``) one fresh-network block per game.

    A reference shares the sequence's initial network (same seed), optimizer (with a restarted
    schedule, its updates run exactly the sequence's first segment) and importance-exponent
    anneal, so the reference of the first game replays the sequence's first block and every
    reference reuses the sequence's compiled programs.
    """
    first = plan_segment("sequence", config, blocks)
    segments = [first]
    if config.evaluation.fresh_reference:
        reference = ml_collections.ConfigDict(first.config.to_dict())
        reference.switch = ml_collections.ConfigDict(dataclasses.asdict(SwitchPolicy()))
        if not reference.replay.importance_exponent_anneal_frames:
            total = sum(block.frames for block in blocks)
            reference.replay.importance_exponent_anneal_frames = total
        for game in sequence.distinct_games(blocks):
            block = GameBlock(game=game, frames=int(config.frames_per_game))
            segments.append(plan_segment(f"fresh_{game}", reference, [block]))
    return segments


# ---------------------------------------------------------------------------------------------
# Checkpoint helpers.


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _saveable(tree: Any) -> Any:
    """PRNG keys replaced by their raw uint32 data (checkpoints store plain arrays)."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _restore_keys(tree: Any, template: Any) -> Any:
    """Raw key data back to typed keys where ``template`` (arrays or shapes) has keys."""
    impl = jax.random.key_impl(jax.random.key(0))  # the loop's keys are jax.random.key's
    return jax.tree.map(
        lambda x, t: jax.random.wrap_key_data(x, impl=impl) if _is_key(t) else x, tree, template
    )


# ---------------------------------------------------------------------------------------------
# The host loop.


class RunResult(NamedTuple):
    """What `train` returns.

    state: the sequence's final state (seed-batched), or None when this call did not reach it;
    evaluations / fresh: the 'eval' and 'eval_fresh' rows written by this call; completed:
    whether every segment finished; seconds: compile and run wall time of this call; frames:
    frames played by this call; preempted: whether ``should_stop`` ended it (after a checkpoint).
    """

    state: LoopState | None
    evaluations: list[dict[str, Any]]
    fresh: list[dict[str, Any]]
    completed: bool
    compile_seconds: float
    run_seconds: float
    frames: int
    preempted: bool = False


class _Position(NamedTuple):
    segment: int
    block: int
    chunk: int


class _Writer:
    """Rows and scalars of the work dir (nothing without one)."""

    def __init__(self, workdir: str | None):
        self.workdir = WorkDir(workdir) if workdir else None

    def rows(self, rows: list[dict[str, Any]]) -> None:
        if self.workdir is not None and rows:
            self.workdir.append_metrics(rows)

    def scalars(self, frames: int, prefix: str, rows: list[dict[str, Any]], skip=()) -> None:
        if self.workdir is None or not rows:
            return
        keys = [
            key
            for key, value in rows[0].items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        ]
        keys = [k for k in keys if k not in ("step", "frames", "block", "visit", "seed") + skip]
        means = {}
        for key in keys:
            values = [row[key] for row in rows if isinstance(row.get(key), (int, float))]
            values = [v for v in values if v is not None and math.isfinite(v)]
            if values:
                means[f"{prefix}/{key}"] = float(np.mean(values))
        self.workdir.write_scalars(frames, means)


def _row(
    event: str, segment: Segment, iteration: int, seed: int, block: GameBlock, **fields
) -> dict[str, Any]:
    """The fields every row carries, at the end of ``iteration`` of ``segment``."""
    frames = (iteration + 1) * segment.num_envs
    updates = int(segment.plan.updates_before[iteration] + segment.plan.updates[iteration])
    return {
        "event": event,
        "step": updates,
        "frames": frames,
        "agent_steps": frames,
        "updates": updates,
        "game": block.game,
        "block": block.index,
        "visit": block.visit,
        "cycle": block.cycle,
        "seed": seed,
        **fields,
    }


def _chunk_rows(
    segment: Segment,
    position: _Position,
    seeds: np.ndarray,
    outputs: dict[str, Any],
    episodes: np.ndarray,
    config: ml_collections.ConfigDict,
    seconds: float,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """('train' rows, 'diagnostics' rows) of one chunk, for every seed; updates ``episodes``."""
    block = segment.blocks[position.block]
    where = segment.chunk_slice(position.block, position.chunk)
    first = where.start
    num_envs = segment.num_envs
    run_frames = (np.arange(where.start, where.stop) + 1) * num_envs
    log_at = _crossings(run_frames, num_envs, int(config.log_every_frames))
    log_at[-1] = True  # windows never span a checkpoint
    ends = np.flatnonzero(log_at)
    frames_per_second = len(run_frames) * num_envs / max(seconds, 1e-9)
    train_rows, diagnostic_rows = [], []
    for s, seed in enumerate(seeds):
        start = 0
        for end in ends:
            window = slice(start, end + 1)
            ended = outputs["ended"][s, window]
            returns = outputs["returns"][s, window][ended]
            lengths = outputs["lengths"][s, window][ended]
            episodes[s] += len(returns)
            updates = int(segment.plan.updates[first + start : first + end + 1].sum())
            learner = {
                name: float(outputs["learner"][name][s, window].sum() / updates)
                for name in LEARNER_SCALARS
                if updates > 0
            }
            iteration = first + end
            train_rows.append(
                _row(
                    "train",
                    segment,
                    iteration,
                    int(seed),
                    block,
                    episodes=int(episodes[s]),
                    episodes_since_last_row=len(returns),
                    return_mean=float(np.mean(returns)) if len(returns) else math.nan,
                    episode_length_mean=float(np.mean(lengths)) if len(lengths) else math.nan,
                    epsilon=float(segment.epsilon[iteration]),
                    importance_exponent=float(segment.importance_exponent[iteration]),
                    frames_per_second=frames_per_second,
                    **learner,
                )
            )
            start = end + 1
        if "diagnostics" in outputs:
            for i in np.flatnonzero(segment.diagnose[where]):
                values = {k: float(v[s, i]) for k, v in outputs["diagnostics"].items()}
                diagnostic_rows.append(
                    _row("diagnostics", segment, first + i, int(seed), block, **values)
                )
    return train_rows, diagnostic_rows


def _evaluate_rows(
    agent: MinAtarAgent,
    state: LoopState,
    segment: Segment,
    block_index: int,
    seeds: np.ndarray,
) -> list[dict[str, Any]]:
    """Evaluation rows after a block: every game seen so far (the reference: its own game)."""
    block = segment.blocks[block_index]
    last_iteration = int(segment.plan.block_first_iteration[block_index + 1]) - 1
    cells = sequence.evaluation_cells(segment.blocks, block_index)
    event = "eval_fresh" if segment.is_reference else "eval"
    rows = []
    for cell in cells:
        game_index = jnp.asarray(agent.suite.game_index(cell.game), jnp.int32)
        # Episodes depend on (block, game) only: a fresh reference meets the same episodes as
        # the sequence's evaluation after the same block (common random numbers).
        salt = jnp.asarray(block_index * 101 + agent.suite.game_index(cell.game), jnp.uint32)
        started = time.perf_counter()
        returns, finished = jax.device_get(
            agent.evaluate(state.train_state.params, game_index, jnp.asarray(seeds), salt)
        )
        seconds = time.perf_counter() - started
        for s, seed in enumerate(seeds):
            done = returns[s][finished[s]]
            row = _row(event, segment, last_iteration, int(seed), block)
            row.update(
                game=cell.game,
                visit=cell.visit,
                trained_game=cell.trained_game,
                end_of_block=True,
                return_mean=float(np.mean(done)) if len(done) else math.nan,
                return_std=float(np.std(done)) if len(done) else math.nan,
                episodes=int(len(done)),
                seconds=seconds,
            )
            rows.append(row)
    return rows


def _seeds(config: ml_collections.ConfigDict) -> np.ndarray:
    return np.arange(config.num_seeds, dtype=np.int32) + int(config.seed)


def train(
    config: ml_collections.ConfigDict,
    blocks: Sequence[GameBlock],
    workdir: str | None = None,
    *,
    show_progress: bool = True,
    stop_after_chunks: int | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> RunResult:
    """Trains ``config.num_seeds`` seeds through ``blocks`` (and the fresh references).

    ``workdir`` None runs without files. ``stop_after_chunks`` ends this call after that many
    chunks (as a preemption would, right after a checkpoint). ``should_stop`` is asked after
    every chunk's checkpoint but the last (e.g. `plasticity.preemption.PreemptionGuard`'s): True
    ends the call there (``preempted``). Bad settings raise a one-line ValueError before
    anything is built; a NaN/Inf learner loss or parameter raises
    `plasticity.divergence.DivergenceError` before that chunk's rows or checkpoint are written.
    """
    validate_minatar_config(config)
    blocks = list(blocks)
    if not blocks:
        raise ValueError("train needs at least one game block")
    for block in blocks:
        if block.frames != config.frames_per_game:
            raise ValueError(
                f"block {block.index} ({block.game}) has {block.frames} frames but "
                f"frames_per_game is {config.frames_per_game}"
            )
    games = tuple(sequence.distinct_games(blocks))
    full_action_space = uses_full_action_space(config, blocks)
    segments = plan_run(config, blocks)
    seeds = _seeds(config)
    writer = _Writer(workdir)
    checkpointer = None
    if writer.workdir is not None:
        schedule = [dataclasses.asdict(block) for block in blocks]
        writer.workdir.check_or_write_config({**config.to_dict(), "schedule": schedule})
        checkpointer = Checkpointer(writer.workdir.checkpoint_dir, config.keep_checkpoints)

    position, saved, episodes = _Position(0, 0, 0), 0, np.zeros(len(seeds), np.int64)
    if checkpointer is not None and checkpointer.latest_step() is not None:
        metadata = checkpointer.restore_metadata()
        position = _Position(metadata["segment"], metadata["block"], metadata["chunk"])
        saved = int(checkpointer.latest_step())
        episodes = np.asarray(metadata["episodes"], np.int64)
        writer.workdir.truncate_metrics(int(metadata["metrics_size"]))

    total = sum(s.total_frames for s in segments)
    done = sum(s.total_frames for s in segments[: position.segment])
    if position.segment < len(segments):
        segment = segments[position.segment]
        done += sum(b.frames for b in segment.blocks[: position.block])
        done += position.chunk * segment.chunk_iterations * segment.num_envs
    progress = Progress(
        total=total, description="train", unit="frame", initial=done, disable=not show_progress
    )
    evaluations, fresh = [], []
    final_state = None
    compile_seconds = run_seconds = 0.0
    frames_played = 0
    chunks_run = 0
    state = None

    def stopped_early(preempted: bool) -> RunResult:
        """The result of a call that ends before the run does (right after a checkpoint)."""
        return RunResult(
            None, evaluations, fresh, False, compile_seconds, run_seconds, frames_played, preempted
        )

    try:
        if saved and position.segment < len(segments):
            writer.rows([_resume_row(segments[position.segment], position, seeds)])
        for index in range(position.segment, len(segments)):
            segment = segments[index]
            agent = make_agent(segment.config, games, full_action_space)
            start = position if index == position.segment else _Position(index, 0, 0)
            if start.block == 0 and start.chunk == 0:
                state = agent.init(jnp.asarray(seeds))
                episodes = np.zeros(len(seeds), np.int64)
            elif state is None:
                state = _restore(checkpointer, agent, seeds)
            for b in range(start.block, len(segment.blocks)):
                block = segment.blocks[b]
                game_index = jnp.asarray(agent.suite.game_index(block.game), jnp.int32)
                first_chunk = start.chunk if b == start.block else 0
                if first_chunk == 0:
                    policy = SwitchPolicy.from_config(segment.config.switch)
                    state = agent.start_block(state, game_index, policy)
                    if b > 0 and not segment.is_reference:
                        writer.rows(_switch_rows(agent, state, segment, b, seeds, policy))
                for c in range(first_chunk, segment.chunks_in_block(b)):
                    if stop_after_chunks is not None and chunks_run >= stop_after_chunks:
                        return stopped_early(preempted=False)
                    plan = {k: jnp.asarray(v) for k, v in segment.chunk_plan(b, c).items()}
                    progress.set_postfix(
                        run=segment.name, game=f"{block.game} ({b + 1}/{len(segment.blocks)})"
                    )
                    started = time.perf_counter()
                    executable, fresh_compile = _executable(agent, state, game_index, plan)
                    if fresh_compile:
                        compile_seconds += time.perf_counter() - started
                        progress.reset_clock()
                    started = time.perf_counter()
                    state, outputs = executable(state, game_index, plan)
                    outputs = jax.device_get(outputs)
                    seconds = time.perf_counter() - started
                    position_now = _Position(index, b, c)
                    _check_losses(segment, position_now, seeds, outputs, checkpointer)
                    run_seconds += seconds
                    frames = segment.chunk_iterations * segment.num_envs
                    frames_played += frames
                    chunks_run += 1
                    last_block_chunk = c == segment.chunks_in_block(b) - 1
                    if not segment.is_reference:
                        train_rows, diagnostic_rows = _chunk_rows(
                            segment,
                            _Position(index, b, c),
                            seeds,
                            outputs,
                            episodes,
                            config,
                            seconds,
                        )
                        writer.rows(train_rows + diagnostic_rows)
                        _write_train_scalars(writer, train_rows)
                        returns = [r["return_mean"] for r in train_rows[-len(seeds) :]]
                        finite = [r for r in returns if math.isfinite(r)]
                        if finite:
                            progress.set_postfix(
                                run=segment.name,
                                game=f"{block.game} ({b + 1}/{len(segment.blocks)})",
                                ret=float(np.mean(finite)),
                            )
                    if last_block_chunk:
                        rows = _evaluate_rows(agent, state, segment, b, seeds)
                        writer.rows(rows)
                        (fresh if segment.is_reference else evaluations).extend(rows)
                        if not segment.is_reference:
                            _write_eval_scalars(writer, rows)
                        _write_evaluation_matrix(writer, blocks)
                        if show_progress:
                            progress.write(_eval_message(segment, block, rows))
                    progress.advance(frames)
                    next_position = _next_position(segments, _Position(index, b, c))
                    if checkpointer is not None:
                        _check_params(segment, position_now, seeds, state, checkpointer)
                        writer.workdir.flush()
                        saved += 1
                        checkpointer.save(
                            saved,
                            _saveable(state),
                            {
                                "segment": next_position.segment,
                                "block": next_position.block,
                                "chunk": next_position.chunk,
                                "episodes": [int(e) for e in episodes],
                                "metrics_size": writer.workdir.metrics_size(),
                            },
                        )
                    finished = next_position.segment >= len(segments)
                    if not finished and should_stop is not None and should_stop():
                        return stopped_early(preempted=True)
            if index == 0:
                final_state = state
        return RunResult(
            final_state, evaluations, fresh, True, compile_seconds, run_seconds, frames_played
        )
    finally:
        progress.close()
        if writer.workdir is not None:
            writer.workdir.close()
        if checkpointer is not None:
            checkpointer.close()


_EXECUTABLES: dict[tuple, Any] = {}


def _executable(agent: MinAtarAgent, state: LoopState, game_index, plan) -> tuple[Any, bool]:
    """(the compiled chunk program for these shapes, whether it was compiled just now).

    Compiled ahead of the first call, so that compile time is measured apart from running.
    """
    key = (agent.run_chunk, len(plan["updates"]), jax.tree.structure(state), len(state.rng))
    if key in _EXECUTABLES:
        return _EXECUTABLES[key], False
    _EXECUTABLES[key] = agent.run_chunk.lower(state, game_index, plan).compile()
    return _EXECUTABLES[key], True


def _updates_through(segment: Segment, iteration: int) -> int:
    """Learner updates of ``segment`` made up to and including loop iteration ``iteration``."""
    return int(segment.plan.updates_before[iteration] + segment.plan.updates[iteration])


def _kept_checkpoint(checkpointer: Checkpointer | None) -> str:
    if checkpointer is None:
        return "no work dir, nothing saved"
    return divergence.kept_checkpoint_text(checkpointer.directory, checkpointer.latest_step())


def _check_losses(
    segment: Segment,
    position: _Position,
    seeds: np.ndarray,
    outputs: dict[str, Any],
    checkpointer: Checkpointer | None,
) -> None:
    """Raises `DivergenceError` at the first loop iteration of the chunk whose learner loss or
    gradient norm (summed over the iteration's updates) is NaN/Inf, naming its last update."""
    found = divergence.first_nonfinite(outputs["learner"], ("loss", "grad_norm"))
    if found is None:
        return
    seed_lane, offset = found.index
    iteration = segment.chunk_slice(position.block, position.chunk).start + offset
    game = segment.blocks[position.block].game
    context = (
        f"{segment.name}, seed {int(seeds[seed_lane])}, {game}, "
        f"frame {(iteration + 1) * segment.num_envs} of the run"
    )
    raise divergence.DivergenceError(
        _updates_through(segment, iteration),
        found.metric,
        found.value,
        context,
        _kept_checkpoint(checkpointer),
    )


def _check_params(
    segment: Segment,
    position: _Position,
    seeds: np.ndarray,
    state: LoopState,
    checkpointer: Checkpointer,
) -> None:
    """Raises `DivergenceError` if a parameter is NaN/Inf, before the chunk is checkpointed."""
    last = segment.chunk_slice(position.block, position.chunk).stop - 1
    divergence.check_params(
        state.train_state.params,
        _updates_through(segment, last),
        context=f"{segment.name}, seeds {[int(s) for s in seeds]}, {segment.blocks[position.block].game}",
        kept=_kept_checkpoint(checkpointer),
    )


def _next_position(segments: list[Segment], position: _Position) -> _Position:
    segment = segments[position.segment]
    if position.chunk + 1 < segment.chunks_in_block(position.block):
        return position._replace(chunk=position.chunk + 1)
    if position.block + 1 < len(segment.blocks):
        return _Position(position.segment, position.block + 1, 0)
    return _Position(position.segment + 1, 0, 0)


def _restore(checkpointer: Checkpointer, agent: MinAtarAgent, seeds: np.ndarray) -> LoopState:
    seeds = jnp.asarray(seeds)
    template = jax.eval_shape(agent.init, seeds)
    tree, _ = checkpointer.restore(jax.eval_shape(lambda s: _saveable(agent.init(s)), seeds))
    return agent.place(_restore_keys(tree, template))


def _resume_row(segment: Segment, position: _Position, seeds: np.ndarray) -> dict[str, Any]:
    block = segment.blocks[position.block]
    iteration = int(segment.plan.block_first_iteration[position.block])
    iteration += position.chunk * segment.chunk_iterations
    row = _row("resume", segment, max(iteration - 1, 0), int(seeds[0]), block)
    row.update(run=segment.name, seeds=[int(s) for s in seeds])
    if iteration == 0:
        row.update(step=0, frames=0, agent_steps=0, updates=0)
    return row


EVALUATION_MATRIX_FILE = "evaluation_matrix.json"


def _write_evaluation_matrix(writer: _Writer, blocks: Sequence[GameBlock]) -> None:
    """``<workdir>/evaluation_matrix.json`` (`agents.sequence.evaluation_matrix_summary`)."""
    if writer.workdir is None or not writer.workdir.is_writer:
        return
    summary = sequence.evaluation_matrix_summary(blocks, read_metrics(writer.workdir.path))
    path = writer.workdir.path / EVALUATION_MATRIX_FILE
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(summary, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    temporary.replace(path)


def _switch_rows(
    agent: MinAtarAgent,
    state: LoopState,
    segment: Segment,
    block_index: int,
    seeds: np.ndarray,
    policy: SwitchPolicy,
) -> list[dict[str, Any]]:
    """'switch' rows: the policy, the next update's learning rate, the replay's items and the
    optimizer moments' norm after the switch (as `agents.atari_loop` writes them)."""
    block, previous = segment.blocks[block_index], segment.blocks[block_index - 1]
    first = int(segment.plan.block_first_iteration[block_index])
    step = int(segment.plan.updates_before[first])
    items = 0 if policy.flush_replay else int(segment.plan.replay_items[first - 1])
    learning_rate = float(optimizer_learning_rate(segment.config.optimizer, step))
    norms = np.asarray(jax.device_get(agent.moments_norm(state)))
    rows = []
    for s, seed in enumerate(seeds):
        row = _row("switch", segment, first - 1, int(seed), previous)
        row.update(
            game=block.game,
            block=block.index,
            visit=block.visit,
            cycle=block.cycle,
            previous_game=previous.game,
            learning_rate=learning_rate,
            replay_items=items,
            optimizer_moments_norm=float(norms[s]),
            **dataclasses.asdict(policy),
        )
        rows.append(row)
    return rows


def _write_train_scalars(writer: _Writer, rows: list[dict[str, Any]]) -> None:
    by_frames: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        by_frames.setdefault(row["frames"], []).append(row)
    for frames, group in sorted(by_frames.items()):
        writer.scalars(frames, "train", group, skip=("agent_steps", "updates", "cycle"))


def _write_eval_scalars(writer: _Writer, rows: list[dict[str, Any]]) -> None:
    by_game: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_game.setdefault(row["game"], []).append(row)
    for game, group in by_game.items():
        skip = ("agent_steps", "updates", "cycle", "episodes", "seconds", "return_std")
        writer.scalars(group[0]["frames"], f"eval/{game}", group, skip=skip)


def _eval_message(segment: Segment, block: GameBlock, rows: list[dict[str, Any]]) -> str:
    by_game: dict[str, list[float]] = {}
    for row in rows:
        value = row["return_mean"]
        if math.isfinite(value):
            by_game.setdefault(row["game"], []).append(value)
    scores = ", ".join(f"{game} {np.mean(v):.2f}" for game, v in by_game.items())
    where = "fresh network" if segment.is_reference else f"block {block.index + 1}"
    return f"eval after {where} ({block.game}, visit {block.visit}): {scores}"
