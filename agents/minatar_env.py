"""MinAtar games (gymnax) behind one interface: common observation planes and action set.

`MinAtarSuite` holds every game of a run in one program: the game is a traced index
(``lax.switch``; unbatched over seeds, so only its branch runs), so a 4-game sequence compiles one
chunk program, not four. Observations are MinAtar's boolean 10x10xC planes with each game's C
channels first and zeros after them, up to the largest C of the run's games. Sequences (more than
one game) use MinAtar's full action set for every game:

    index:  0 noop  1 left  2 up  3 right  4 down  5 fire

which gymnax maps to each game as MinAtar does: actions outside a game's minimal set are no-ops.
Minimal sets (indices into the full set): asterix 0 1 2 3 4, breakout 0 1 3, freeway 0 2 4,
seaquest all six, space_invaders 0 1 3 5. A single-game run uses the game's minimal set
unless ``env.full_action_space`` is set.

Timesteps follow the dm_env convention of `agents.replay`: at a ``last`` timestep (terminated,
discount 0; or truncated at the episode step limit, discount 1) the action is ignored and the
next timestep is the ``first`` of a new episode (gymnasium's "NextStep" autoreset). Sticky
actions (``env.sticky_action_prob``, MinAtar's 0.1): each step repeats the env's previous action
with that probability. One MinAtar step is one frame.
"""

from __future__ import annotations

import functools
import importlib
import sys
import types
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from flax import struct

from agents.sequence import resolve_game_name

# Imported by gymnax's environment modules for rendering, which this project never asks of
# gymnax; loading them (with pandas and SciPy's statistics) takes over a second of each MinAtar
# process.
GYMNAX_RENDERING_MODULES = ("matplotlib.pyplot", "seaborn")


class _DeferredModule(types.ModuleType):
    """Stands for a module while gymnax imports: the real one is imported at the first read of
    one of its attributes (gymnax reads them only to render)."""

    def __getattr__(self, attribute: str) -> Any:
        return getattr(importlib.import_module(self.__name__), attribute)


def import_gymnax():
    """Imports gymnax without importing its rendering libraries.

    ``import gymnax`` imports every environment it ships, and with them matplotlib's pyplot and
    seaborn. While it imports, each of those not already imported is a `_DeferredModule` in
    ``sys.modules``; they are taken out again afterwards, so any later ``import`` of them
    (the project's figures, a notebook) gets the real module, and gymnax's own references load
    it if gymnax ever renders. Called where a suite is built, not at the top of this module,
    because gymnax itself takes a while to import.
    """
    if "gymnax" in sys.modules:
        return sys.modules["gymnax"]
    deferred = {
        name: _DeferredModule(name) for name in GYMNAX_RENDERING_MODULES if name not in sys.modules
    }
    sys.modules.update(deferred)
    try:
        import gymnax  # noqa: PLC0415
    finally:
        for name, module in deferred.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
    return gymnax


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


def resolve_minatar_game(name: str) -> str:
    """The canonical name of a MinAtar game ('Breakout-MinAtar', 'SpaceInvaders' -> ...);
    `agents.sequence.resolve_game_name`, the resolver of every suite."""
    return resolve_game_name(name, MINATAR_GAMES, "MinAtar")


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


def _batched_game(env: Any, params: Any) -> tuple[Any, Any]:
    """One game's step and reset over a batch of envs, each a `jax.jit`: every program of a
    process that plays the game at a batch size (a run's chunk, its first reset, its evaluation,
    `MinAtarSuite.init`'s shapes, the runs after it) reuses one trace of gymnax's game logic,
    which takes seconds to trace, instead of tracing it again. A compiled program inlines them.
    """
    step = jax.jit(jax.vmap(lambda key, state, action: env.step_env(key, state, action, params)))
    reset = jax.jit(jax.vmap(lambda key: env.reset_env(key, params)))
    return step, reset


class MinAtarSuite:
    """The games of a run behind one interface: common observation planes and action set.

    Args:
      games: canonical game names (`resolve_minatar_game`), in the order of their indices.
      full_action_space: every game takes MinAtar's six actions (required for several games).
      sticky_action_prob: probability that an env repeats its previous action at a step.
      max_episode_steps: truncation limit in steps; 0 keeps gymnax's (1,000; 2,500 for freeway,
        whose timer ends MinAtar's own game). MinAtar itself has no limit: its published scores
        (Young & Tian; Obando-Ceron & Castro) come from uncut episodes, so compare with them
        under a large limit. A cut episode bootstraps (Freeway's timer too: it is not observed).
    """

    def __init__(
        self,
        games: Sequence[str],
        full_action_space: bool = True,
        sticky_action_prob: float = 0.1,
        max_episode_steps: int = 0,
    ):
        gymnax = import_gymnax()

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
        self.batched = tuple(_batched_game(env, p) for env, p in zip(self.envs, self.params))
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
        keys = jax.ShapeDtypeStruct((num_envs,), jax.random.key(0).dtype)
        actions = jax.ShapeDtypeStruct((num_envs,), jnp.int32)
        for step, reset in self.batched:
            shapes = jax.eval_shape(reset, keys)[1]
            steps = jax.eval_shape(step, keys, shapes, actions)[1]
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
            (step, reset), limit = self.batched[g], self.step_limits[g]

            def play(states):
                obs, state, reward, terminated, _ = step(keys[:, 0], states[g], actions)
                state = _strong(state)
                reset_obs, reset_state = reset(keys[:, 1])
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
