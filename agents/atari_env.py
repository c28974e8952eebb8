"""Batched Atari environments with DQN preprocessing, emitting dm_env-style timesteps.

Built on ale-py's C++ vector environment (``ale_py.vector_env.AtariVectorEnv``), which runs the
emulators on a thread pool and does the DQN preprocessing in C++: 84x84 grayscale, action repeat with
a max-pool over the last two frames, frame stacking, no-op starts, sticky actions. This module adds
the bookkeeping the agents need and ale-py does not give: life-loss bootstrapping without ending the
episode, clipped *and* raw rewards, ``first``/``last`` flags, episode returns, and seeding that is
reproducible and decorrelated across seeds.

Timeline (one ``Timestep`` per env per call, arrays with a leading env axis N):

* ``first[i]``: o_t starts a new episode (the reset observation after no-ops); reward 0, discount 1.
* ``reward[i]`` / ``discount[i]``: received on arriving at o_t. ``discount`` is 0 when the game is
  over at o_t and, with ``life_loss_ends_bootstrap``, when a life was lost on arriving at o_t; a life
  loss does not end the episode (``last`` stays False and the next timestep is not ``first``).
* ``last[i]``: the episode is over at o_t: game over (discount 0) or truncation after
  ``max_episode_frames`` (discount 1 unless a life was lost on that same step). The action passed for
  env i at a ``last`` timestep is ignored and the next timestep of env i is ``first``
  (gymnasium's "NextStep" autoreset). At a truncation, ale-py (0.12) leaves its frame-skip loop
  on the cap before it reads the step's last frame, so o_t's newest frame pools the step's third
  frame with the step before's instead of its last two; the replay bootstraps from it (discount
  1), once an episode. Truncating here instead would need a step in which an env does not move,
  which ale-py's vector interface has only for its own resets, so this stays an upstream defect.

The agent passes ``action_t`` for every env at every timestep, so the stream is ``reset()`` then
``step(actions)`` (or ``send(actions)`` ... ``recv()``) forever; episodes restart by themselves.

``send`` returns as soon as the actions are queued: ale-py's C++ threads emulate while Python runs
(e.g. a jitted learner update, which releases the GIL), and ``recv`` waits for them. No Python thread
is involved. Partial batches (ale-py's ``batch_size < num_envs``) are not used, because they return
envs in completion order and would break the fixed per-env time lines.

Seeding: explicit seeded resets reload each ROM (ale-py applies a seed that way) and cost ~0.15 s per
emulator; the automatic resets between episodes are cheap.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, NamedTuple

import ale_py
import numpy as np
import numpy.typing as npt
from ale_py import roms
from ale_py.vector_env import AtariVectorEnv

from agents.atari_scores import match_game

FULL_ACTION_NAMES: tuple[str, ...] = tuple(ale_py.Action(i).name for i in range(18))

# The ALE's logger is process-wide, and at its default level the first emulator prints a welcome
# banner to stderr, where the launchers draw their progress bar. Its warnings and errors still print.
ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Warning)

# ale-py ships these ROMs, but its single-player interface cannot load them and exits the process.
_MULTIPLAYER_ONLY_ROMS = frozenset({"combat", "joust", "maze_craze", "warlords"})


class Timestep(NamedTuple):
    """One timestep of every env, structure-of-arrays with a leading env axis N."""

    observation: (
        np.ndarray
    )  # (N, H, W, stack) uint8, newest frame last; frames before the episode are 0
    frame: np.ndarray  # (N, H, W) uint8, the newest frame alone (== observation[..., -1])
    first: np.ndarray  # (N,) bool, o_t starts an episode
    last: np.ndarray  # (N,) bool, the episode is over at o_t (game over or truncation)
    reward: np.ndarray  # (N,) float32, clipped to [-1, 1] when reward_clip, else == raw_reward
    raw_reward: np.ndarray  # (N,) float32, the game's score change on arriving at o_t
    discount: np.ndarray  # (N,) float32, 0 at game over (and at life loss if so configured), else 1
    life_loss: (
        np.ndarray
    )  # (N,) bool, a life was lost on arriving at o_t (also at game over; never at first)
    episode_return: (
        np.ndarray
    )  # (N,) float32, raw return of the episode so far, o_t's reward included
    episode_frames: np.ndarray  # (N,) int32, emulator frames of the episode so far, no-ops included
    lives: np.ndarray  # (N,) int32, lives left at o_t (0 for games without lives)


@dataclasses.dataclass(frozen=True)
class AtariConfig:
    """Settings of a batch of Atari environments; defaults are the DQN/Rainbow (DQN Zoo) ones.

    Attributes:
      game: any common spelling of an ale-py ROM ('Pong', 'ms_pacman', 'ALE/Breakout-v5').
      num_envs: number of emulators N stepped together.
      seed: seeds every emulator (no-op starts, sticky actions); same seed, same actions -> same
        frames.
      sticky_action_prob: probability that the emulator repeats the previous action on each frame
        (Machado et al., 2018 use 0.25; DQN used 0).
      full_action_space: use all 18 joystick actions (FULL_ACTION_NAMES) for every game instead of
        the game's minimal set.
      noop_max: after each reset the emulator runs a uniform random number of single-frame no-ops
        in {0, ..., noop_max} (0 disables them; DQN Zoo draws from 1, which the ALE's vector
        environment, drawing from 0, cannot do).
      frame_skip: emulator frames per agent step (the action is repeated).
      max_pool: max-pool the last two emulator frames of each agent step (removes Atari flicker).
      stack: number of most recent frames in an observation.
      max_episode_frames: episodes are truncated once the agent's steps reach this many frames, i.e.
        after ceil(max_episode_frames / frame_skip) agent steps (no-op frames do not count).
      life_loss_ends_bootstrap: discount 0 on losing a life (the episode goes on).
      reward_clip: `reward` is clipped to [-1, 1]; `raw_reward` always keeps the game's score.
      fire_reset: press FIRE after each reset in games that need it (DQN did not; off by default).
      screen_size: height and width of the square grayscale frames.
      num_threads: emulator threads; None -> min(num_envs, CPU cores available to this process).
    """

    game: str = "pong"
    num_envs: int = 1
    seed: int = 0
    sticky_action_prob: float = 0.0
    full_action_space: bool = False
    noop_max: int = 30
    frame_skip: int = 4
    max_pool: bool = True
    stack: int = 4
    max_episode_frames: int = 108_000
    life_loss_ends_bootstrap: bool = True
    reward_clip: bool = True
    fire_reset: bool = False
    screen_size: int = 84
    num_threads: int | None = None


def available_games() -> tuple[str, ...]:
    """ROM ids of every single-player game ale-py ships, sorted (e.g. 'pong', 'montezuma_revenge')."""
    return tuple(sorted(set(roms.get_all_rom_ids()) - _MULTIPLAYER_ONLY_ROMS))


def resolve_game(name: str) -> str:
    """Canonical ale-py ROM id of a game written in any common style.

    'Pong', 'pong', 'ALE/Pong-v5', 'PongNoFrameskip-v4' -> 'pong'; 'MontezumaRevenge' and
    'montezuma_revenge' -> 'montezuma_revenge'. An unknown name raises a one-line ValueError listing
    close matches among the ROMs ale-py ships.
    """
    if isinstance(name, str) and name.strip().lower().replace("-", "_") in _MULTIPLAYER_ONLY_ROMS:
        raise ValueError(
            f"{name!r} is a multiplayer-only ROM that ale-py's single-player interface cannot load"
        )
    return match_game(name, available_games(), "the single-player ROMs ale-py ships")


@functools.cache
def minimal_action_names(game: str) -> tuple[str, ...]:
    """Names of ``game``'s own (minimal) action set, read from the ROM, in ale-py's order (once a
    process: loading a ROM takes 0.1 s)."""
    interface = ale_py.ALEInterface()
    interface.loadROM(roms.get_rom_path(resolve_game(game)))
    return tuple(action.name for action in interface.getMinimalActionSet())


def check_action_sets(games: tuple[str, ...], full_action_space: bool) -> None:
    """One-line ValueError when games played by one network with their minimal action sets have
    different ones: one output would mean another joystick action in each game, even where the
    counts agree (Enduro's and MsPacman's 9 actions)."""
    if full_action_space:
        return
    names = {resolve_game(game): minimal_action_names(game) for game in games}
    (first, own), *others = names.items()
    for game, theirs in others:
        if theirs != own:
            raise ValueError(
                f"{first} and {game} have different action sets ({len(own)}: "
                f"{', '.join(own)}; {len(theirs)}: {', '.join(theirs)}); set "
                "env.full_action_space=True to play them with one network"
            )


def full_action_lookup(game_action_names: tuple[str, ...]) -> np.ndarray:
    """Index into a game's action set for each of the 18 joystick actions (FULL_ACTION_NAMES order).

    ale-py's "full" action set has only 9 actions in games without a fire button (skiing,
    lost_luggage); there an action with FIRE acts as the same direction without it, as the console
    would. Gives every game the same 18-action interface, which sequential Atari needs.
    """
    index = {name: i for i, name in enumerate(game_action_names)}
    lookup = []
    for name in FULL_ACTION_NAMES:
        without_fire = name.replace("FIRE", "") or "NOOP"
        if name in index:
            lookup.append(index[name])
        elif without_fire in index:
            lookup.append(index[without_fire])
        else:
            raise ValueError(
                f"cannot map joystick action {name} onto the action set {game_action_names}"
            )
    return np.asarray(lookup, np.int32)


def _check_int(name: str, value: object, minimum: int) -> None:
    """Raises a one-line ValueError unless `value` is an int >= minimum."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


# `AtariConfig` fields an RL config's ``env`` section holds under the same names.
SECTION_FIELDS = (
    "sticky_action_prob",
    "noop_max",
    "frame_skip",
    "stack",
    "max_episode_frames",
    "life_loss_ends_bootstrap",
    "reward_clip",
    "screen_size",
    "num_threads",
)


def config_of_section(
    section: Any, game: str, num_envs: int, seed: int, full_action_space: bool
) -> AtariConfig:
    """The `AtariConfig` of an RL config's ``env`` section (`agents.configs`) for ``game``."""
    fields = {name: section[name] for name in SECTION_FIELDS}
    return AtariConfig(game, num_envs, seed, full_action_space=full_action_space, **fields)


def validate_config(config: AtariConfig) -> AtariConfig:
    """Checks every setting and returns the config with the game name made canonical."""
    _check_int("num_envs", config.num_envs, 1)
    _check_int("seed", config.seed, 0)
    _check_int("noop_max", config.noop_max, 0)
    _check_int("frame_skip", config.frame_skip, 1)
    _check_int("stack", config.stack, 1)
    _check_int("max_episode_frames", config.max_episode_frames, 1)
    _check_int("screen_size", config.screen_size, 1)
    if config.num_threads is not None:
        _check_int("num_threads", config.num_threads, 1)
    if not 0.0 <= config.sticky_action_prob <= 1.0:
        raise ValueError(f"sticky_action_prob must be in [0, 1], got {config.sticky_action_prob!r}")
    return dataclasses.replace(config, game=resolve_game(config.game))


def default_num_threads(num_envs: int) -> int:
    """One emulator thread per env, at most one per CPU core this process may use."""
    return max(1, min(num_envs, len(os.sched_getaffinity(0))))


def derive_env_seeds(seed: int, reset_count: int, num_envs: int) -> np.ndarray:
    """Per-emulator seeds (int64 in [0, 2**31)) for the `reset_count`-th reset of a seeded batch.

    Hashed with NumPy's SeedSequence, so that seed s and s + 1 share no emulator seeds (ale-py's own
    integer seeding gives emulator i the seed s + i) and every reset gets fresh seeds.
    """
    state = np.random.SeedSequence([seed, reset_count]).generate_state(num_envs, dtype=np.uint32)
    return (state >> 1).astype(np.int64)


class AtariVectorEnvironment:
    """N Atari emulators with DQN preprocessing, stepped together; see the module docstring.

    Use `reset()` once, then `step(actions)` every agent step, or split a step into
    `send(actions)` (returns at once; the emulators run on their own threads) and `recv()` (waits
    for them) to overlap a learner update with emulation.
    """

    def __init__(self, config: AtariConfig):
        self.config = validate_config(config)
        cfg = self.config
        num_threads = cfg.num_threads or default_num_threads(cfg.num_envs)
        self._env = AtariVectorEnv(
            game=cfg.game,
            num_envs=cfg.num_envs,
            num_threads=num_threads,
            max_num_frames_per_episode=cfg.max_episode_frames,
            repeat_action_probability=float(cfg.sticky_action_prob),
            full_action_space=cfg.full_action_space,
            img_height=cfg.screen_size,
            img_width=cfg.screen_size,
            grayscale=True,
            stack_num=cfg.stack,
            frameskip=cfg.frame_skip,
            maxpool=cfg.max_pool,
            # ale-py draws the no-op count in [0, noop_max), so +1 gives {0, ..., noop_max}.
            noop_max=cfg.noop_max + 1 if cfg.noop_max > 0 else 0,
            # Life loss and reward clipping are done here, so that episodes span all lives and the
            # raw score survives.
            episodic_life=False,
            life_loss_info=False,
            reward_clipping=False,
            use_fire_reset=cfg.fire_reset,
            autoreset_mode="NextStep",
        )
        self.num_envs = cfg.num_envs
        self.num_threads = num_threads
        game_action_names = tuple(action.name for action in self._env.ale.get_action_set())
        if cfg.full_action_space:
            self.action_names = FULL_ACTION_NAMES
            self._action_lookup = full_action_lookup(game_action_names)
        else:
            self.action_names = game_action_names
            self._action_lookup = np.arange(len(game_action_names), dtype=np.int32)
        self.num_actions = len(self.action_names)
        self.observation_shape = (cfg.screen_size, cfg.screen_size, cfg.stack)
        self.frame_shape = (cfg.screen_size, cfg.screen_size)
        self._reset_count = 0
        self._awaiting_recv = False
        self._closed = False
        self._last = np.zeros(cfg.num_envs, bool)
        self._lives = np.zeros(cfg.num_envs, np.int32)
        self._episode_return = np.zeros(cfg.num_envs, np.float32)
        self._started = False

    @property
    def game(self) -> str:
        """Canonical ROM id of the game being played."""
        return self.config.game

    def reset(self, seed: int | None = None) -> Timestep:
        """Starts a new episode in every env and returns the `first` timestep.

        seed None: the first reset uses `config.seed`; later resets derive fresh seeds from
        `config.seed` and a reset counter, so a run is reproducible end to end. An int reseeds as
        if the env had been built with that seed.
        """
        self._check_open()
        if self._awaiting_recv:
            raise RuntimeError("reset() called between send() and recv(); call recv() first")
        if seed is not None:
            _check_int("seed", seed, 0)
            self.config = dataclasses.replace(self.config, seed=int(seed))
            self._reset_count = 0
        env_seeds = derive_env_seeds(self.config.seed, self._reset_count, self.num_envs)
        self._reset_count += 1
        stacked, info = self._env.reset(seed=env_seeds)
        n = self.num_envs
        self._last = np.zeros(n, bool)
        self._lives = info["lives"].astype(np.int32)
        self._episode_return = np.zeros(n, np.float32)
        self._started = True
        return self._timestep(
            stacked,
            first=np.ones(n, bool),
            last=np.zeros(n, bool),
            raw_reward=np.zeros(n, np.float32),
            discount=np.ones(n, np.float32),
            life_loss=np.zeros(n, bool),
            info=info,
        )

    def send(self, actions: npt.ArrayLike) -> None:
        """Starts one agent step of every env with `actions` (N ints) and returns at once.

        The emulators run on ale-py's C++ threads while Python (e.g. a jitted learner update) goes
        on; `recv()` collects the result. Actions of envs whose last timestep was `last` are ignored.
        """
        self._check_open()
        if not self._started:
            raise RuntimeError("send()/step() called before reset()")
        if self._awaiting_recv:
            raise RuntimeError("send() called twice without recv(); call recv() first")
        self._env.send(self._checked_actions(actions))
        self._awaiting_recv = True

    def recv(self) -> Timestep:
        """Waits for the step started by `send()` and returns its timestep."""
        self._check_open()
        if not self._awaiting_recv:
            raise RuntimeError("recv() called without a pending send()")
        stacked, raw_reward, terminated, truncated, info = self._env.recv()
        self._awaiting_recv = False
        first = self._last
        lives = info["lives"].astype(np.int32)
        life_loss = ~first & (lives < self._lives)
        last = terminated | truncated
        raw_reward = raw_reward.astype(np.float32)
        discount = (~terminated).astype(np.float32)
        if self.config.life_loss_ends_bootstrap:
            discount *= ~life_loss
        self._episode_return = np.where(first, 0.0, self._episode_return + raw_reward).astype(
            np.float32
        )
        self._lives = lives
        self._last = last
        return self._timestep(stacked, first, last, raw_reward, discount, life_loss, info)

    def step(self, actions: npt.ArrayLike) -> Timestep:
        """One agent step of every env: `send(actions)` then `recv()`."""
        self.send(actions)
        return self.recv()

    def close(self) -> None:
        """Stops the emulator threads; further calls raise. Safe to call twice."""
        if not self._closed:
            self._env.close()
            self._closed = True

    def __enter__(self) -> AtariVectorEnvironment:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the Atari environment is closed")

    def _checked_actions(self, actions: npt.ArrayLike) -> np.ndarray:
        """Indices into ale-py's action set for (N,) agent actions, or a one-line ValueError."""
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,):
            raise ValueError(f"actions must have shape ({self.num_envs},), got {actions.shape}")
        if not np.issubdtype(actions.dtype, np.integer):
            raise ValueError(f"actions must be integers, got dtype {actions.dtype}")
        if actions.size and (actions.min() < 0 or actions.max() >= self.num_actions):
            raise ValueError(
                f"actions must be in [0, {self.num_actions}) for {self.game}, got {actions}"
            )
        return self._action_lookup[actions]

    def _timestep(
        self,
        stacked: np.ndarray,
        first: np.ndarray,
        last: np.ndarray,
        raw_reward: np.ndarray,
        discount: np.ndarray,
        life_loss: np.ndarray,
        info: dict[str, np.ndarray],
    ) -> Timestep:
        """Packs ale-py's (N, stack, H, W) frames and the flags into a channels-last Timestep."""
        reward = np.clip(raw_reward, -1.0, 1.0) if self.config.reward_clip else raw_reward.copy()
        return Timestep(
            observation=np.ascontiguousarray(stacked.transpose(0, 2, 3, 1)),
            frame=np.ascontiguousarray(stacked[:, -1]),
            first=first.copy(),
            last=last.copy(),
            reward=reward.astype(np.float32),
            raw_reward=raw_reward,
            discount=discount.astype(np.float32),
            life_loss=life_loss,
            episode_return=self._episode_return.copy(),
            episode_frames=info["episode_frame_number"].astype(np.int32),
            lives=self._lives.copy(),
        )


def make_atari_env(
    game: str,
    num_envs: int,
    seed: int,
    *,
    sticky_action_prob: float = 0.0,
    full_action_space: bool = False,
    noop_max: int = 30,
    frame_skip: int = 4,
    max_pool: bool = True,
    stack: int = 4,
    max_episode_frames: int = 108_000,
    life_loss_ends_bootstrap: bool = True,
    reward_clip: bool = True,
    fire_reset: bool = False,
    screen_size: int = 84,
    num_threads: int | None = None,
) -> AtariVectorEnvironment:
    """Builds N seeded Atari envs with DQN preprocessing; arguments are those of `AtariConfig`."""
    return AtariVectorEnvironment(
        AtariConfig(
            game=game,
            num_envs=num_envs,
            seed=seed,
            sticky_action_prob=sticky_action_prob,
            full_action_space=full_action_space,
            noop_max=noop_max,
            frame_skip=frame_skip,
            max_pool=max_pool,
            stack=stack,
            max_episode_frames=max_episode_frames,
            life_loss_ends_bootstrap=life_loss_ends_bootstrap,
            reward_clip=reward_clip,
            fire_reset=fire_reset,
            screen_size=screen_size,
            num_threads=num_threads,
        )
    )
