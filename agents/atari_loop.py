"""Actor-learner loop of DQN / Rainbow on Atari: N emulators overlapped with a jitted learner.

One iteration of `train`:

1. act: a jitted epsilon-greedy (or noisy) forward pass on the N current observations;
2. ``env.send(actions)``: ale-py's C++ threads start emulating the N agent steps;
3. while they run, XLA runs the replay add of the current timesteps and the learner updates
   owed by the replay ratio (``updates_per_frame`` x frames since learning started), each one a
   jitted ``sample -> update -> new priorities`` with the train state and the replay donated;
4. ``env.recv()`` waits for the emulators.

The learner's functions are dispatched asynchronously, so steps 2-4 overlap emulation and learning;
the next act waits for the last update (on-policy up to the updates of one iteration).

Game sequences. The run is a function of a list of `agents.sequence.GameBlock`s (game, frames,
visit, index, cycle), played in order with one network and one replay: one block is single-game
Atari; `make_game_blocks` builds NaP's sequential ALE (games x cycles). Runs of more than one game
use the full 18-action set, so one head serves every game. At each switch (the first frame of
every block after the first) the episodes in flight are cut in the replay and the switch policy
of ``config.switch`` (`agents.sequence.SwitchPolicy`; all off by default) flushes the replay,
resets the optimizer's moments and/or restarts the learning-rate schedule; with
``restart_schedule`` the optimizer follows a warm-up + cosine schedule restarted at the update
count where each block starts, counted ahead of the run (`planned_block_updates`), NaP's
sequential-ALE schedule with the preset's ``optimizer.schedule`` values. A 'switch' row records
each switch. Switches happen at exact frame counts: every block is a whole number of loop
iterations (``env.num_envs x env.frame_skip`` frames each).

Evaluation matrix. After each block every game seen so far is evaluated ('eval' rows with
``end_of_block`` True: ``game`` is the game evaluated, ``trained_game`` the block's game,
``visit`` how many blocks of the evaluated game have been played); ``evaluation.every_frames``
adds progress evaluations of the current game inside a block (``end_of_block`` False).
`train_sequence` runs the sequence, then, with ``evaluation.fresh_reference``, one freshly
initialized network per game trained for one block on that game alone (same seed, config and
learning-rate segment as the sequence's first block; work dir ``<workdir>/fresh/<game>``), copies
their end-of-block scores into the sequence's metrics as 'eval_fresh' rows and writes
``evaluation_matrix.json`` (`evaluation_matrix_summary`): first-visit and revisit scores next to
the fresh network's, so forgetting (a game's score falling while others are trained) and loss of
plasticity (a revisit, or a later game's first visit, learning less than a fresh network) can be
told apart. The reference costs one more block per game (half the frames again for a sequence
cycled twice), which is why it is a switch.

Everything is counted in environment frames (agent steps x ``env.frame_skip``); every metrics row
carries ``frames``, ``agent_steps``, ``updates`` (= ``step``), ``game``, ``block``, ``visit``,
``cycle`` and ``seed``.

Work dir (`plasticity.workdir`): ``config.json`` (the config and the schedule), ``metrics.jsonl``
(events 'train', 'eval', 'eval_fresh', 'switch', 'diagnostics', 'intervention', 'resume'),
``evaluation_matrix.json``, TensorBoard scalars keyed by frames, and Orbax checkpoints
(`plasticity.checkpointing`) of the train state, the replay, the RNG key and the counters, written
every ``checkpoint_every_frames`` frames and at the end of every block (before the switch).
Relaunching on the same work dir resumes from the newest checkpoint: learner, optimizer, replay,
counters and RNG are restored, metrics rows written after that checkpoint are dropped, and the
emulators start new episodes (the cut episodes end at their last stored timestep in the replay),
so an Atari run is resumed exactly up to the episodes in flight, not bit for bit.

Safety. Divergence (`plasticity.divergence`): the loss of every update since the last 'train' row
is checked before that row is written, and again (with the parameters) before every checkpoint;
the first NaN/Inf raises `DivergenceError` naming the exact update (``step``), the metric, the
game, seed and frame, and the checkpoint kept, so a diverged state is never saved and the last
good checkpoint stays the newest. Preemption: ``should_stop`` (e.g.
`plasticity.preemption.PreemptionGuard.should_stop`) is asked at the end of every loop iteration,
a safe point (the loop is one process, so it is a flag read, not a collective), and between the
sequence and its fresh references; when it says True a checkpoint of that iteration is written
(unless one just was) and the call returns with ``preempted`` set; relaunching resumes as above.
Checkpoints are rare at full scale (every 5M frames), far longer apart than a scheduler's grace
period, hence the per-iteration question.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

import ale_py
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from ale_py import roms
from flax import struct

from agents import atari_scores, sequence
from agents.atari_env import AtariVectorEnvironment, make_atari_env, resolve_game
from agents.configs import learning_starts_transitions, linear_schedule, validate_config
from agents.learner import (
    Learner,
    make_learn_step,
    make_learner,
    make_replay,
    preprocess_observations,
)
from agents.replay import ReplayState, replay_add, replay_end_episodes, replay_sample
from agents.sequence import GameBlock, SwitchPolicy
from plasticity import divergence
from plasticity.checkpointing import Checkpointer
from plasticity.optim import optimizer_learning_rate
from plasticity.progress import Progress
from plasticity.train_state import TrainState, map_optimizer_moments
from plasticity.workdir import WorkDir, read_metrics

FULL_ACTION_SET_SIZE = 18


EVALUATION_MATRIX_FILE = "evaluation_matrix.json"
FRESH_DIR = "fresh"
MATRIX_KEYS = ("return_mean", "human_normalized")  # the scores of evaluation_matrix.json


def make_game_blocks(
    games: Sequence[str], frames_per_game: int, cycles: int = 1
) -> list[GameBlock]:
    """Blocks of ``frames_per_game`` frames for ``games`` in order, played ``cycles`` times.

    Game names are made canonical ('Pong', 'ALE/Pong-v5' -> 'pong'); an unknown one raises a
    one-line ValueError with close matches. Blocks carry their index, cycle and visit number.
    """
    return sequence.make_schedule(games, frames_per_game, cycles, resolve=resolve_game)


@struct.dataclass
class AgentState:
    """Everything the loop's jitted functions read and write: learner, replay and RNG key."""

    train_state: TrainState
    replay: ReplayState
    rng: jax.Array


@dataclasses.dataclass
class Counters:
    """Host-side progress of a run (all in the checkpoint's metadata).

    frames / agent_steps: over the whole run; block: index of the current block and block_frames
    the frames played in it; replay_items: transitions in the replay (capped at its capacity);
    learning_frames / learning_updates: frames and updates since learning started (the replay
    ratio, epsilon and the importance exponent follow them); episodes: training episodes finished.
    """

    frames: int = 0
    agent_steps: int = 0
    updates: int = 0
    block: int = 0
    block_frames: int = 0
    replay_items: int = 0
    learning_frames: int = 0
    learning_updates: int = 0
    episodes: int = 0
    evaluations: int = 0


class EvalResult(NamedTuple):
    """Returns of the evaluation episodes that finished within the frame cap."""

    game: str
    returns: list[float]
    frames: int

    @property
    def mean_return(self) -> float:
        """Mean raw return of the counted episodes (NaN when none finished)."""
        return float(np.mean(self.returns)) if self.returns else math.nan

    @property
    def human_normalized(self) -> float | None:
        """Human-normalized mean return; None without reference scores for the game or episodes."""
        if not self.returns or self.game not in atari_scores.ATARI_57_GAMES:
            return None
        return float(atari_scores.human_normalized_score(self.game, self.mean_return))


class RunResult(NamedTuple):
    """What `train` returns: the final state, counters and every evaluation of this process;
    ``completed``: every block played; ``preempted``: stopped because ``should_stop`` said so (a
    checkpoint holds where it stood; relaunch to resume)."""

    state: AgentState
    counters: Counters
    evaluations: list[dict[str, Any]]
    completed: bool = False
    preempted: bool = False


class CompiledAgent(NamedTuple):
    """The learner and the jitted functions of the loop, shared by runs with the same config."""

    learner: Learner
    init: Callable[[jax.Array, jax.ShapeDtypeStruct], TrainState]
    act: Callable[..., tuple[jax.Array, jax.Array]]
    evaluate_act: Callable[..., tuple[jax.Array, jax.Array]]
    add: Callable[..., ReplayState]
    learn: Callable[..., tuple[TrainState, ReplayState, jax.Array, dict[str, jax.Array]]]


# The config the compiled functions close over; seeds, budgets, env, logging, evaluation settings
# and the replay's sizes and annealing can change without recompiling (jit retraces on new shapes).
_COMPILED_SECTIONS = ("network", "learner", "optimizer", "updates_per_frame")
_COMPILED_REPLAY_FIELDS = ("prioritized",)


def _config_key(config: ml_collections.ConfigDict) -> str:
    compiled = {name: config[name] for name in _COMPILED_SECTIONS}
    compiled["replay"] = {name: config.replay[name] for name in _COMPILED_REPLAY_FIELDS}
    return json.dumps(compiled, sort_keys=True, default=lambda value: value.to_dict())


# Acting depends on the network only, adding on nothing: shared by configs that differ elsewhere
# (e.g. a sequence with and without a restarted schedule).
_ACTORS: dict[tuple[str, int], tuple[Callable[..., Any], Callable[..., Any]]] = {}
_ADD = jax.jit(replay_add, donate_argnums=0)


def _actor(learner: Learner, config: ml_collections.ConfigDict, num_actions: int):
    key = (json.dumps(config.network.to_dict(), sort_keys=True), num_actions)
    if key not in _ACTORS:

        def act(params, obs, rng, epsilon):
            rng, key = jax.random.split(rng)
            return learner.act(params, obs, key, epsilon), rng

        def evaluate_act(params, obs, rng, epsilon, deterministic):
            rng, key = jax.random.split(rng)
            return learner.act(params, obs, key, epsilon, deterministic), rng

        _ACTORS[key] = (jax.jit(act), jax.jit(evaluate_act, static_argnums=4))
    return _ACTORS[key]


@functools.lru_cache(maxsize=8)
def _compile_agent(config_json: str, num_actions: int) -> CompiledAgent:
    config = ml_collections.ConfigDict(json.loads(config_json))
    learner = make_learner(config, num_actions)
    learn_step = make_learn_step(learner, config)
    act, evaluate_act = _actor(learner, config, num_actions)

    def learn(train_state, replay, rng, importance_exponent):
        rng, key = jax.random.split(rng)
        train_state, replay, aux = learn_step(train_state, replay, key, importance_exponent)
        return train_state, replay, rng, aux

    return CompiledAgent(
        learner=learner,
        init=jax.jit(learner.init, static_argnums=1),
        act=act,
        evaluate_act=evaluate_act,
        add=_ADD,
        learn=jax.jit(learn, donate_argnums=(0, 1)),
    )


def compile_agent(config: ml_collections.ConfigDict, num_actions: int) -> CompiledAgent:
    """The learner and jitted loop functions for ``config``.

    Cached on the settings that shape them (network, learner, optimizer, replay ratio, prioritized
    replay), so runs that differ only in seed, budget, env, replay size, evaluation or logging
    settings share compiled code (a fresh-network reference reuses its sequence's).
    ``learn(train_state, replay, rng, importance_exponent) -> (train_state, replay, rng, aux)``
    donates the train state and the replay.
    """
    return _compile_agent(_config_key(config), int(num_actions))


def uses_full_action_space(config: ml_collections.ConfigDict, blocks: Sequence[GameBlock]) -> bool:
    """``env.full_action_space``, or when unset (None): whether the run plays more than one game."""
    if config.env.full_action_space is not None:
        return bool(config.env.full_action_space)
    return len({block.game for block in blocks}) > 1


def learning_starts(config: ml_collections.ConfigDict) -> int:
    """Replay items needed before the first update: the preset's fill fraction (at least one
    batch), and at least one full n-step window with a whole frame stack per env."""
    return max(
        learning_starts_transitions(config),
        config.env.num_envs * (config.learner.n_step + config.env.stack),
    )


def switch_policy(config: ml_collections.ConfigDict) -> SwitchPolicy:
    """The switch policy of ``config.switch`` (flush_replay, reset_optimizer, restart_schedule);
    all off when the config has no such section."""
    section = config.get("switch")
    return SwitchPolicy.from_config(section if section is not None else {})


def planned_block_updates(
    config: ml_collections.ConfigDict, blocks: Sequence[GameBlock], flush_at_switch: bool = False
) -> tuple[list[int], int]:
    """(learner updates made before each block starts, updates of the whole run), ahead of it.

    The loop's replay ratio in closed form (`agents.sequence.plan_learning` iteration by
    iteration, without its per-iteration arrays, which would take gigabytes at paper scale):
    once the replay holds `learning_starts` items, every iteration's frames are learning frames
    and the updates owed are ``floor(learning frames x updates_per_frame)``; after a flush the
    replay refills before learning resumes.
    """
    num_envs = config.env.num_envs
    frames_per_iteration = num_envs * config.env.frame_skip
    capacity = (config.replay.capacity // num_envs) * num_envs
    starts_at = learning_starts(config)
    updates_per_frame = config.updates_per_frame

    def owed(frames: int) -> int:
        return int(math.floor(frames * updates_per_frame + 1e-9))

    items, learning_frames, starts = 0, 0, []
    for position, block in enumerate(blocks):
        if flush_at_switch and position > 0:
            items = 0
        starts.append(owed(learning_frames))
        iterations = block.frames // frames_per_iteration
        if capacity < starts_at:
            first_learning = iterations
        elif items >= starts_at:
            first_learning = 0
        else:  # first i with items + (i + 1) x num_envs >= starts_at
            first_learning = -(-(starts_at - items) // num_envs) - 1
        learning_frames += max(0, iterations - first_learning) * frames_per_iteration
        items = min(items + iterations * num_envs, capacity)
    return starts, owed(learning_frames)


def learning_config(
    config: ml_collections.ConfigDict, blocks: Sequence[GameBlock]
) -> ml_collections.ConfigDict:
    """The config the learner is built with: ``config`` itself, or with ``switch.restart_schedule``
    its optimizer on a warm-up + cosine schedule restarted where each block starts
    (`agents.sequence.restarted_schedule_config`)."""
    policy = switch_policy(config)
    if not policy.restart_schedule:
        return config
    starts, total = planned_block_updates(config, blocks, policy.flush_replay)
    resolved = ml_collections.ConfigDict(config.to_dict())
    resolved.optimizer = sequence.restarted_schedule_config(config.optimizer, starts, total)
    return resolved


def make_env(
    config: ml_collections.ConfigDict, game: str, num_envs: int, seed: int, full_action_space: bool
) -> AtariVectorEnvironment:
    """A vector env of ``game`` with the preprocessing of ``config.env``."""
    env = config.env
    return make_atari_env(
        game,
        num_envs,
        seed,
        sticky_action_prob=env.sticky_action_prob,
        full_action_space=full_action_space,
        noop_max=env.noop_max,
        frame_skip=env.frame_skip,
        stack=env.stack,
        max_episode_frames=env.max_episode_frames,
        life_loss_ends_bootstrap=env.life_loss_ends_bootstrap,
        reward_clip=env.reward_clip,
        screen_size=env.screen_size,
        num_threads=env.num_threads,
    )


def minimal_action_count(game: str) -> int:
    """Number of actions in ``game``'s own (minimal) action set, read from the ROM."""
    interface = ale_py.ALEInterface()
    interface.setLoggerMode(ale_py.LoggerMode.Error)
    interface.loadROM(roms.get_rom_path(resolve_game(game)))
    return len(interface.getMinimalActionSet())


def derive_seed(*parts: int) -> int:
    """A seed in [0, 2**31) hashed from integers (run seed, block, purpose, ...)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] >> 1)


def observation_spec(config: ml_collections.ConfigDict) -> jax.ShapeDtypeStruct:
    """Shape and dtype of one observation: (screen, screen, stack) uint8."""
    size = config.env.screen_size
    return jax.ShapeDtypeStruct((size, size, config.env.stack), jnp.uint8)


def init_agent_state(
    config: ml_collections.ConfigDict, compiled: CompiledAgent, num_envs: int, seed: int
) -> AgentState:
    """A fresh learner (seeded by ``seed``), an empty replay and the loop's RNG key.

    Committed to the default device, as a state restored from a checkpoint is: the compiled loop
    functions then see the same input shardings whether a run starts or resumes (a mismatch
    would compile every one of them again after a resume).
    """
    init_key, loop_key = jax.random.split(jax.random.key(seed))
    train_state = compiled.init(init_key, observation_spec(config))
    size = config.env.screen_size
    replay = make_replay(config, (size, size), num_envs, config.env.stack)
    state = AgentState(train_state=train_state, replay=replay, rng=loop_key)
    return jax.device_put(state, jax.devices()[0])


def evaluate(
    compiled: CompiledAgent,
    params: Any,
    config: ml_collections.ConfigDict,
    game: str,
    seed: int,
    full_action_space: bool,
    env: AtariVectorEnvironment | None = None,
) -> EvalResult:
    """Plays ``config.evaluation.episodes`` episodes of ``game`` with ``params`` and returns them.

    Envs share the episodes evenly (env i plays its quota, later episodes are ignored), so short
    episodes are not over-counted; at most ``evaluation.max_frames`` frames are played and
    episodes unfinished by then are dropped. Epsilon ``evaluation.epsilon``; noisy nets sample
    their noise unless ``evaluation.noise`` is False. Uses (and resets) ``env`` when given.
    """
    evaluation = config.evaluation
    own_env = env is None
    if own_env:
        num_envs = min(evaluation.num_envs or config.env.num_envs, evaluation.episodes)
        env = make_env(config, game, num_envs, seed, full_action_space)
    num_envs = env.num_envs
    quota = np.full(num_envs, evaluation.episodes // num_envs)
    quota[: evaluation.episodes % num_envs] += 1
    rng = jax.device_put(jax.random.key(seed), jax.devices()[0])  # as the params: committed
    returns: list[float] = []
    finished = np.zeros(num_envs, np.int64)
    frames = 0
    try:
        timestep = env.reset(seed=seed)
        while np.any(finished < quota) and frames < evaluation.max_frames:
            actions, rng = compiled.evaluate_act(
                params, timestep.observation, rng, evaluation.epsilon, not evaluation.noise
            )
            timestep = env.step(np.asarray(actions))
            frames += env.num_envs * config.env.frame_skip
            for i in np.flatnonzero(timestep.last):
                if finished[i] < quota[i]:
                    returns.append(float(timestep.episode_return[i]))
                finished[i] += 1
    finally:
        if own_env:
            env.close()
    return EvalResult(game=game, returns=returns, frames=frames)


def _is_key(x: Any) -> bool:
    return jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _saveable(tree: Any) -> Any:
    """PRNG keys replaced by their raw uint32 data (checkpoint formats store plain arrays)."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _restore_keys(tree: Any, template: Any) -> Any:
    return jax.tree.map(
        lambda x, t: jax.random.wrap_key_data(x, impl=jax.random.key_impl(t)) if _is_key(t) else x,
        tree,
        template,
    )


_all_finite = jax.jit(divergence.tree_is_finite)


def _mean_scalars(rows: list[dict[str, jax.Array]]) -> dict[str, float]:
    """Means over the learner's scalar metrics since the last log row (one device fetch)."""
    if not rows:
        return {}
    fetched = jax.device_get(rows)
    return {key: float(np.mean([row[key] for row in fetched])) for key in fetched[0]}


class _Run:
    """The mutable bookkeeping of one `train` call; see the module docstring for the loop."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        blocks: Sequence[GameBlock],
        workdir: str | None,
        show_progress: bool,
    ):
        self.config = config
        self.blocks = list(blocks)
        self.full_action_space = uses_full_action_space(config, blocks)
        self.total_frames = sum(block.frames for block in blocks)
        self.workdir = WorkDir(workdir) if workdir else None
        self.checkpointer = (
            Checkpointer(self.workdir.checkpoint_dir, config.keep_checkpoints) if workdir else None
        )
        self.show_progress = show_progress
        self.counters = Counters()
        self.evaluations: list[dict[str, Any]] = []
        self.learner_rows: list[dict[str, jax.Array]] = []
        self.episode_returns: list[float] = []
        self.last_return = math.nan
        self.learning_starts = learning_starts(config)
        self.policy = switch_policy(config)
        # Updates made before each block starts, when the schedule restarts there (a check).
        self.planned_block_updates = (
            planned_block_updates(config, blocks, self.policy.flush_replay)[0]
            if self.policy.restart_schedule
            else None
        )
        self.anneal_frames = config.replay.importance_exponent_anneal_frames or self.total_frames
        self.last_log_time = time.perf_counter()
        self.last_log_frames = 0
        self.last_log_updates = 0
        self.diagnostics = None  # jitted diagnostics function, when config.diagnostics asks
        self.params_before_update = None  # kept for update ratios when diagnostics are on
        self.intervention = None  # `plasticity.interventions.Intervention`, when configured
        self.preempted = False  # set when ``should_stop`` ended the run early

    # Schedules -------------------------------------------------------------------------------

    def epsilon(self) -> float:
        exploration = self.config.exploration
        if self.counters.replay_items < self.learning_starts:
            return exploration.epsilon_begin
        return linear_schedule(
            self.counters.learning_frames,
            exploration.epsilon_begin,
            exploration.epsilon_end,
            exploration.decay_frames,
        )

    def importance_exponent(self) -> float:
        replay = self.config.replay
        return linear_schedule(
            self.counters.learning_frames,
            replay.importance_exponent_begin,
            replay.importance_exponent_end,
            self.anneal_frames,
        )

    # Rows --------------------------------------------------------------------------------------

    def row(self, event: str, **fields: Any) -> dict[str, Any]:
        block = self.blocks[min(self.counters.block, len(self.blocks) - 1)]
        c = self.counters
        return {
            "event": event,
            "step": c.updates,
            "frames": c.frames,
            "agent_steps": c.agent_steps,
            "updates": c.updates,
            "game": block.game,
            "block": c.block,
            "visit": block.visit,
            "cycle": block.cycle,
            "seed": self.config.seed,
            **fields,
        }

    def write(self, rows: list[dict[str, Any]], scalars_prefix: str | None = None) -> None:
        if self.workdir is None:
            return
        self.workdir.append_metrics(rows)
        if scalars_prefix is not None:
            for row in rows:
                scalars = {
                    f"{scalars_prefix}/{key}": value
                    for key, value in row.items()
                    if isinstance(value, (int, float))
                    and not isinstance(value, bool)
                    and key not in ("step", "frames", "block", "visit", "cycle", "seed")
                }
                self.workdir.write_scalars(self.counters.frames, scalars)

    def write_scalars(self, scalars: dict[str, float]) -> None:
        if self.workdir is not None and scalars:
            self.workdir.write_scalars(self.counters.frames, scalars)

    # Divergence --------------------------------------------------------------------------------

    def divergence_context(self) -> str:
        """'game pong, seed 0, frame 768': where the run stands, for a divergence message."""
        block = self.blocks[min(self.counters.block, len(self.blocks) - 1)]
        return f"game {block.game}, seed {self.config.seed}, frame {self.counters.frames}"

    def kept_checkpoint(self) -> str:
        """Which checkpoint a diverged run keeps (checkpoint steps count frames)."""
        if self.checkpointer is None:
            return ""
        step = self.checkpointer.latest_step()
        return divergence.kept_checkpoint_text(
            self.checkpointer.directory, step, f"{step:,} frames" if step is not None else ""
        )

    def check_losses(self) -> None:
        """Raises `DivergenceError` at the first NaN/Inf loss of the updates since the last row.

        Fetches the learner's rows to the host once (the train row reads them from there).
        """
        self.learner_rows = jax.device_get(self.learner_rows)
        losses = np.array([row["loss"] for row in self.learner_rows], np.float64)
        if not np.all(np.isfinite(losses)):
            divergence.check_consecutive_steps(
                losses,
                self.counters.updates,
                metric="loss",
                context=self.divergence_context(),
                kept=self.kept_checkpoint(),
            )

    # Checkpoints -------------------------------------------------------------------------------

    def save(self, state: AgentState) -> None:
        """Writes a checkpoint of ``state`` at the current frame count, after checking that the
        losses since the last row and the parameters are finite (a diverged state is never
        saved)."""
        if self.checkpointer is None:
            return
        self.check_losses()
        if not bool(_all_finite(state.train_state.params)):  # one scalar read, names nothing
            divergence.check_params(
                state.train_state.params,
                self.counters.updates,
                context=self.divergence_context(),
                kept=self.kept_checkpoint(),
            )
        self.workdir.flush()
        metadata = {
            "counters": dataclasses.asdict(self.counters),
            "metrics_size": self.workdir.metrics_size(),
            "last_return": None if math.isnan(self.last_return) else self.last_return,
        }
        self.checkpointer.save(self.counters.frames, _saveable(state), metadata)

    def restore(self, template: AgentState) -> AgentState | None:
        if self.checkpointer is None or self.checkpointer.latest_step() is None:
            return None
        abstract = jax.eval_shape(lambda: _saveable(template))
        tree, metadata = self.checkpointer.restore(abstract)
        self.counters = Counters(**metadata["counters"])
        if metadata.get("last_return") is not None:
            self.last_return = float(metadata["last_return"])
        self.workdir.truncate_metrics(int(metadata["metrics_size"]))
        state = _restore_keys(tree, template)
        return state.replace(replay=jax.jit(replay_end_episodes)(state.replay))


def train(
    config: ml_collections.ConfigDict,
    blocks: Sequence[GameBlock],
    workdir: str | None = None,
    *,
    show_progress: bool = True,
    stop_at_frames: int | None = None,
    block_start: Callable[[AgentState, GameBlock, Counters], AgentState] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> RunResult:
    """Trains one agent through ``blocks`` and returns the final state, counters and evaluations.

    ``workdir`` None runs without files (no metrics, no checkpoints, no resume). ``stop_at_frames``
    ends the run early (after a checkpoint) once that many frames are done, as a preemption would.
    ``should_stop()`` is asked after every loop iteration but the run's last; a True ends the run
    there, after a checkpoint, with ``preempted`` set. At every game switch the switch policy of
    ``config.switch`` is applied (module docstring); then ``block_start(state, block, counters)
    -> state``, when given, runs before each block. Bad settings raise a one-line ValueError
    before anything is built; a NaN/Inf loss or parameter raises
    `plasticity.divergence.DivergenceError` before the row or checkpoint holding it is written.
    """
    validate_config(config)
    blocks = list(blocks)
    if not blocks:
        raise ValueError("train needs at least one game block")
    frames_per_vector_step = config.env.num_envs * config.env.frame_skip
    for block in blocks:
        if block.frames < 1 or block.frames % frames_per_vector_step:
            raise ValueError(
                f"block {block.game} has {block.frames} frames; a block needs a positive "
                f"multiple of env.num_envs x env.frame_skip = {frames_per_vector_step}"
            )
    given = config
    config = learning_config(config, blocks)
    run = _Run(config, blocks, workdir, show_progress)
    if run.workdir is not None:
        schedule = [dataclasses.asdict(block) for block in blocks]
        run.workdir.check_or_write_config({**given.to_dict(), "schedule": schedule})

    num_actions = (
        FULL_ACTION_SET_SIZE if run.full_action_space else minimal_action_count(blocks[0].game)
    )
    compiled = compile_agent(config, num_actions)
    fresh = init_agent_state(config, compiled, config.env.num_envs, config.seed)
    run.diagnostics = _make_diagnostics(run, compiled)
    run.intervention = _make_intervention(run, compiled)
    if run.intervention is not None:  # its state lives in the train state (and the checkpoint)
        train_state = fresh.train_state
        extra = {
            **train_state.extra,
            run.intervention.name: run.intervention.init(train_state.params),
        }
        fresh = fresh.replace(train_state=train_state.replace(extra=extra))
    state = run.restore(fresh)
    if state is None:
        state = fresh
    else:
        del fresh
        run.write([run.row("resume")])

    progress = Progress(
        total=run.total_frames,
        description="train",
        unit="frame",
        initial=run.counters.frames,
        disable=not show_progress,
    )
    try:
        while run.counters.block < len(blocks):
            block = blocks[run.counters.block]
            if run.counters.block_frames >= block.frames:
                run.counters.block += 1
                run.counters.block_frames = 0
                continue
            if run.counters.block_frames == 0:
                # A checkpoint is never taken at a block's frame 0, so a resumed run switches once.
                if run.counters.block > 0:
                    state = _switch_games(run, state, blocks[run.counters.block - 1])
                if block_start is not None:
                    state = block_start(state, block, run.counters)
            state, stopped = _play_block(
                run, compiled, state, block, num_actions, progress, stop_at_frames, should_stop
            )
            if stopped:
                break
    finally:
        progress.close()
        if run.workdir is not None:
            run.workdir.close()
        if run.checkpointer is not None:
            run.checkpointer.close()
    return RunResult(
        state=state,
        counters=run.counters,
        evaluations=run.evaluations,
        completed=run.counters.frames >= run.total_frames,
        preempted=run.preempted,
    )


@functools.lru_cache(maxsize=None)
def _jitted_switch(policy: SwitchPolicy):
    """`agents.sequence.apply_switch_policy` for one policy, the state and replay donated."""
    return jax.jit(
        functools.partial(sequence.apply_switch_policy, policy=policy), donate_argnums=(0, 1)
    )


@jax.jit
def optimizer_moments_norm(train_state: TrainState) -> jax.Array:
    """Global norm of the optimizer's moments (Adam's mu and nu, RMSProp's averages, momentum
    traces): 0 right after a switch that resets them."""
    squares = []
    map_optimizer_moments(
        train_state.opt_state,
        train_state.params,
        lambda tree: squares.extend(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)),
    )
    return jnp.sqrt(sum(squares, jnp.zeros([], jnp.float32)))


def _switch_games(run: _Run, state: AgentState, previous: GameBlock) -> AgentState:
    """Applies the switch policy between ``previous`` and the current block; writes a 'switch'
    row (the policy, the learning rate of the next update, the replay's items and the optimizer
    moments' norm after the switch)."""
    policy, counters = run.policy, run.counters
    train_state, replay = _jitted_switch(policy)(state.train_state, state.replay)
    if policy.flush_replay:
        counters.replay_items = 0
    step = int(train_state.step)
    if run.planned_block_updates is not None and step != run.planned_block_updates[counters.block]:
        raise RuntimeError(
            f"block {counters.block} starts after {step} updates but the restarted schedule was "
            f"planned for {run.planned_block_updates[counters.block]}"
        )
    learning_rate = float(optimizer_learning_rate(run.config.optimizer, step))
    row = run.row(
        "switch",
        previous_game=previous.game,
        learning_rate=learning_rate,
        replay_items=counters.replay_items,
        optimizer_moments_norm=float(optimizer_moments_norm(train_state)),
        **dataclasses.asdict(policy),
    )
    run.write([row])
    return state.replace(train_state=train_state, replay=replay)


class SequenceResult(NamedTuple):
    """What `train_sequence` returns.

    run: the sequence's `RunResult`; fresh: {game: 'eval_fresh' row}, the final evaluation of
    each fresh-network reference (empty without ``evaluation.fresh_reference`` or when the
    sequence was stopped early; a reference's state is released before the next one starts, so
    at most two replays are in memory: the sequence's and one reference's); matrix: the
    `evaluation_matrix_summary` written to the work dir; preempted: ``should_stop`` ended the call
    early, in the sequence or in a reference (relaunch to resume).
    """

    run: RunResult
    fresh: dict[str, dict[str, Any]]
    matrix: dict[str, Any]
    preempted: bool = False

    @property
    def completed(self) -> bool:
        """Whether the sequence and every reference it asked for are done."""
        return self.run.completed and not self.preempted


def sequence_config(
    config: ml_collections.ConfigDict, blocks: Sequence[GameBlock]
) -> ml_collections.ConfigDict:
    """``config`` with what the sequence and its fresh references must share made explicit.

    The action set (18 actions when the sequence plays several games) and the horizon of the
    importance-exponent anneal (the sequence's frames when it is 0), so a reference trained on
    one game acts and anneals as the sequence's first block does.
    """
    resolved = ml_collections.ConfigDict(config.to_dict())
    resolved.env.full_action_space = uses_full_action_space(config, blocks)
    if not resolved.replay.importance_exponent_anneal_frames:
        resolved.replay.importance_exponent_anneal_frames = sum(block.frames for block in blocks)
    return resolved


def fresh_reference_config(
    config: ml_collections.ConfigDict, blocks: Sequence[GameBlock]
) -> ml_collections.ConfigDict:
    """The config of a fresh-network reference of the sequence ``config`` x ``blocks``.

    Same seed (the same initial network), action set, replay and annealing; the optimizer is the
    sequence's own (with a restarted schedule, a reference's updates are exactly the sequence's
    first segment), so the reference reuses the sequence's compiled learner.
    """
    reference = sequence_config(config, blocks)
    reference.optimizer = learning_config(reference, blocks).optimizer
    reference.switch = ml_collections.ConfigDict(dataclasses.asdict(SwitchPolicy()))
    reference.evaluation.fresh_reference = False
    return reference


def train_sequence(
    config: ml_collections.ConfigDict,
    blocks: Sequence[GameBlock],
    workdir: str | None = None,
    *,
    show_progress: bool = True,
    stop_at_frames: int | None = None,
    block_start: Callable[[AgentState, GameBlock, Counters], AgentState] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> SequenceResult:
    """Trains the sequence ``blocks``, then its fresh-network references, and writes the matrix.

    The sequence is `train` with `sequence_config`. With ``evaluation.fresh_reference`` every
    game then gets a new network trained for one block (its first block's frames) on that game
    alone, in ``<workdir>/fresh/<game>`` (resumable like any run); its end-of-block evaluation is
    copied into the sequence's metrics as an 'eval_fresh' row. ``evaluation_matrix.json`` is
    written at the end (and after every block by `train`). ``stop_at_frames`` counts the
    sequence's frames; a sequence stopped early trains no reference. ``should_stop`` is passed to
    every `train` call and also asked before each reference starts. Relaunching resumes wherever
    the previous launch stopped.
    """
    blocks = list(blocks)
    config = sequence_config(config, blocks)
    run = train(
        config,
        blocks,
        workdir,
        show_progress=show_progress,
        stop_at_frames=stop_at_frames,
        block_start=block_start,
        should_stop=should_stop,
    )
    preempted = run.preempted
    fresh: dict[str, dict[str, Any]] = {}
    wants_reference = bool(config.evaluation.get("fresh_reference", False))
    if run.completed and wants_reference:
        reference_config = fresh_reference_config(config, blocks)
        for game in sequence.distinct_games(blocks):
            if should_stop is not None and should_stop():
                preempted = True
                break
            first = next(block for block in blocks if block.game == game)
            path = Path(workdir) / FRESH_DIR / game if workdir else None
            reference = train(
                reference_config,
                [GameBlock(game=game, frames=first.frames)],
                str(path) if path is not None else None,
                show_progress=show_progress,
                should_stop=should_stop,
            )
            evaluations, preempted = reference.evaluations, reference.preempted
            del reference  # its state (and replay) is released here
            if preempted:
                break
            rows = read_metrics(path) if path is not None else evaluations
            final = [row for row in rows if row.get("event") == "eval" and row.get("end_of_block")]
            if final:
                fresh[game] = {**final[-1], "event": "eval_fresh"}
    if workdir is None:
        eval_rows = run.evaluations + list(fresh.values())
    else:
        _append_fresh_rows(Path(workdir), list(fresh.values()))
        eval_rows = read_metrics(workdir)
    matrix = evaluation_matrix_summary(blocks, eval_rows)
    if workdir is not None:
        _write_json(Path(workdir) / EVALUATION_MATRIX_FILE, matrix)
    return SequenceResult(run=run, fresh=fresh, matrix=matrix, preempted=preempted)


def _append_fresh_rows(workdir: Path, rows: list[dict[str, Any]]) -> None:
    """Appends the 'eval_fresh' rows of games that the metrics file does not hold yet."""
    present = {row.get("game") for row in read_metrics(workdir) if row.get("event") == "eval_fresh"}
    missing = [row for row in rows if row["game"] not in present]
    if missing:
        with WorkDir(workdir, tensorboard=False) as writer:
            writer.append_metrics(missing)


def _write_json(path: Path, value: Any) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(value, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    temporary.replace(path)


def evaluation_matrix_summary(
    blocks: Sequence[GameBlock], rows: Iterable[Mapping[str, Any]]
) -> dict[str, Any]:
    """``evaluation_matrix.json`` of an Atari sequence: `agents.sequence.evaluation_matrix_summary`
    of the raw and the human-normalized returns ([block][game] grids ``return_mean`` and
    ``human_normalized``, ``fresh``, ``visit_scores`` and ``visit_scores_human_normalized``)."""
    return sequence.evaluation_matrix_summary(blocks, rows, MATRIX_KEYS)


def write_evaluation_matrix(workdir: str | Path, blocks: Sequence[GameBlock]) -> dict[str, Any]:
    """Writes ``<workdir>/evaluation_matrix.json`` from the work dir's metrics and returns it."""
    matrix = evaluation_matrix_summary(blocks, read_metrics(workdir))
    _write_json(Path(workdir) / EVALUATION_MATRIX_FILE, matrix)
    return matrix


def _crossed(before: int, after: int, period: int) -> bool:
    """Whether a multiple of ``period`` lies in (before, after]."""
    return period > 0 and after // period > before // period


def _play_block(
    run: _Run,
    compiled: CompiledAgent,
    state: AgentState,
    block: GameBlock,
    num_actions: int,
    progress: Progress,
    stop_at_frames: int | None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[AgentState, bool]:
    """Trains on one block from ``counters.block_frames`` to its end; returns (state, stopped).

    Stopped early (after a checkpoint): at ``stop_at_frames``, or when ``should_stop()``, asked at
    the end of every iteration but the run's last, says True (``run.preempted`` is then set).
    """
    config, counters = run.config, run.counters
    num_envs, frame_skip = config.env.num_envs, config.env.frame_skip
    frames_per_step = num_envs * frame_skip
    env_seed = derive_seed(config.seed, counters.block, counters.block_frames, 0)
    env = make_env(config, block.game, num_envs, env_seed, run.full_action_space)
    if env.num_actions != num_actions:
        env.close()
        raise ValueError(
            f"{block.game} has {env.num_actions} actions but the network has {num_actions}; "
            "set env.full_action_space=True to play games with different action sets"
        )
    eval_env = None
    diagnostics, intervention = run.diagnostics, run.intervention
    updates_per_frame = config.updates_per_frame
    stopped = False
    compiled_once = False
    try:
        timestep = env.reset()
        while counters.block_frames < block.frames:
            actions, rng = compiled.act(
                state.train_state.params, timestep.observation, state.rng, run.epsilon()
            )
            env.send(np.asarray(actions))
            replay = compiled.add(
                state.replay,
                timestep.frame,
                actions,
                timestep.reward,
                timestep.discount,
                timestep.first,
                timestep.last,
            )
            state = state.replace(replay=replay, rng=rng)
            before = counters.frames
            counters.frames += frames_per_step
            counters.block_frames += frames_per_step
            counters.agent_steps += num_envs
            counters.replay_items = min(counters.replay_items + num_envs, state.replay.capacity)

            if counters.replay_items >= run.learning_starts:
                counters.learning_frames += frames_per_step
                due = int(counters.learning_frames * updates_per_frame + 1e-9)
                due -= counters.learning_updates
                beta = run.importance_exponent()
                for i in range(due):
                    if diagnostics is not None:  # update ratios compare with the last update
                        run.params_before_update = jax.tree.map(jnp.copy, state.train_state.params)
                    train_state, replay, rng, aux = compiled.learn(
                        state.train_state, state.replay, state.rng, beta
                    )
                    state = state.replace(train_state=train_state, replay=replay, rng=rng)
                    run.learner_rows.append({k: v for k, v in aux.items() if k != "per_example"})
                counters.learning_updates += due
                counters.updates += due

            timestep = env.recv()
            episode_ended = bool(np.any(timestep.last))
            for i in np.flatnonzero(timestep.last):
                run.episode_returns.append(float(timestep.episode_return[i]))
                run.last_return = float(timestep.episode_return[i])
                counters.episodes += 1

            if not compiled_once:  # the first iteration compiled the actor: keep it out of the rate
                compiled_once = True
                progress.reset_clock()
            if episode_ended or counters.block_frames == frames_per_step:
                progress.set_postfix(
                    game=f"{block.game} ({counters.block + 1}/{len(run.blocks)})",
                    last_return=run.last_return,
                )
            progress.advance(frames_per_step)

            block_done = counters.block_frames >= block.frames
            if (
                diagnostics is not None
                and run.params_before_update is not None
                and _crossed(before, counters.frames, config.diagnostics.every_frames)
            ):
                _write_diagnostics(run, compiled, diagnostics, state, run.params_before_update)
            if (
                intervention is not None
                and _crossed(before, counters.frames, config.intervention.every_frames)
                and counters.replay_items >= run.learning_starts
            ):
                state = _intervene(run, compiled, intervention, state)
            if _crossed(before, counters.frames, config.log_every_frames) or block_done:
                _write_train_row(run)
            if block_done or _crossed(before, counters.frames, config.evaluation.every_frames):
                if eval_env is None:
                    eval_env = _make_eval_env(run, block.game)
                if block_done:
                    _evaluate_matrix(run, compiled, state, eval_env, progress)
                else:
                    _evaluate_progress(run, compiled, state, block, eval_env, progress)
            run_done = block_done and counters.block == len(run.blocks) - 1
            preempt = not run_done and should_stop is not None and bool(should_stop())
            stop_now = preempt or (stop_at_frames is not None and counters.frames >= stop_at_frames)
            if (
                _crossed(before, counters.frames, config.checkpoint_every_frames)
                or block_done
                or stop_now
            ):
                run.save(state)
            if stop_now:
                run.preempted = preempt
                stopped = True
                break
    finally:
        env.close()
        if eval_env is not None:
            eval_env.close()
    return state, stopped


def _make_eval_env(run: _Run, game: str, purpose: int = 0) -> AtariVectorEnvironment:
    evaluation = run.config.evaluation
    num_envs = min(evaluation.num_envs or run.config.env.num_envs, evaluation.episodes)
    seed = derive_seed(run.config.seed, run.counters.block, 1, purpose)
    return make_env(run.config, game, num_envs, seed, run.full_action_space)


def _evaluate_row(
    run: _Run,
    compiled: CompiledAgent,
    state: AgentState,
    eval_env: AtariVectorEnvironment,
    game: str,
    trained_game: str,
    **fields: Any,
) -> dict[str, Any]:
    """Evaluates the current parameters on ``game`` and returns its 'eval' row (not written)."""
    seed = derive_seed(run.config.seed, run.counters.block, run.counters.evaluations, 2)
    started = time.perf_counter()
    result = evaluate(
        compiled,
        state.train_state.params,
        run.config,
        game,
        seed,
        run.full_action_space,
        env=eval_env,
    )
    run.counters.evaluations += 1
    return run.row(
        "eval",
        game=game,
        trained_game=trained_game,
        **fields,
        return_mean=result.mean_return,
        return_std=float(np.std(result.returns)) if result.returns else math.nan,
        episodes=len(result.returns),
        eval_frames=result.frames,
        human_normalized=result.human_normalized,
        seconds=time.perf_counter() - started,
    )


def _describe(row: dict[str, Any]) -> str:
    text = f"{row['game']} {row['return_mean']:.1f}"
    if row["human_normalized"] is not None:
        text += f" ({row['human_normalized']:.3f} human-normalized)"
    return text


def _evaluate_progress(
    run: _Run,
    compiled: CompiledAgent,
    state: AgentState,
    block: GameBlock,
    eval_env: AtariVectorEnvironment,
    progress: Progress,
) -> None:
    """A progress evaluation of the current game inside a block (``evaluation.every_frames``)."""
    row = _evaluate_row(run, compiled, state, eval_env, block.game, block.game, end_of_block=False)
    run.evaluations.append(row)
    run.write([row], scalars_prefix="eval")
    if run.show_progress:
        progress.write(f"eval at {run.counters.frames:,} frames: {_describe(row)}")


def _evaluate_matrix(
    run: _Run,
    compiled: CompiledAgent,
    state: AgentState,
    eval_env: AtariVectorEnvironment,
    progress: Progress,
) -> None:
    """The evaluation-matrix row of the block just finished: every game seen so far.

    ``eval_env`` (the block's game) is reused; other games get an env of their own.
    """
    position = run.counters.block
    block = run.blocks[position]
    rows = []
    for purpose, cell in enumerate(sequence.evaluation_cells(run.blocks, position), start=1):
        env = eval_env if cell.game == block.game else _make_eval_env(run, cell.game, purpose)
        try:
            rows.append(
                _evaluate_row(
                    run,
                    compiled,
                    state,
                    env,
                    cell.game,
                    cell.trained_game,
                    visit=cell.visit,
                    end_of_block=True,
                )
            )
        finally:
            if env is not eval_env:
                env.close()
    run.evaluations.extend(rows)
    run.write(rows)
    for row in rows:
        run.write_scalars(
            {
                f"eval/{row['game']}/{key}": row[key]
                for key in ("return_mean", "human_normalized")
                if row[key] is not None
            }
        )
    if run.show_progress:
        progress.write(
            f"eval after block {position} ({block.game}, visit {block.visit}) at "
            f"{run.counters.frames:,} frames: " + ", ".join(_describe(row) for row in rows)
        )
    if run.workdir is not None:
        run.workdir.flush()
        write_evaluation_matrix(run.workdir.path, run.blocks)


def _write_train_row(run: _Run) -> None:
    """The 'train' row since the last one; its losses are checked for divergence first."""
    run.check_losses()
    now = time.perf_counter()
    elapsed = max(now - run.last_log_time, 1e-9)
    c = run.counters
    learner = _mean_scalars(run.learner_rows)
    row = run.row(
        "train",
        episodes=c.episodes,
        return_mean=float(np.mean(run.episode_returns)) if run.episode_returns else math.nan,
        episodes_since_last_row=len(run.episode_returns),
        epsilon=run.epsilon(),
        importance_exponent=run.importance_exponent(),
        frames_per_second=(c.frames - run.last_log_frames) / elapsed,
        updates_per_second=(c.updates - run.last_log_updates) / elapsed,
        **learner,
    )
    run.write([row], scalars_prefix="train")
    run.learner_rows.clear()
    run.episode_returns.clear()
    run.last_log_time, run.last_log_frames, run.last_log_updates = now, c.frames, c.updates


def _probe_batch(
    run: _Run, state: AgentState, batch_size: int, purpose: int
) -> dict[str, jax.Array]:
    """A uniform replay batch for diagnostics and interventions, drawn with a key of its own."""
    key = jax.random.key(derive_seed(run.config.seed, run.counters.frames, purpose))
    batch, _ = replay_sample(
        state.replay, key, batch_size, run.config.learner.n_step, run.config.learner.discount
    )
    return batch


def _make_diagnostics(run: _Run, compiled: CompiledAgent):
    """The jitted diagnostics function of ``config.diagnostics`` (None when switched off)."""
    settings = run.config.diagnostics
    if settings.every_frames <= 0:
        return None
    num_actions = compiled.learner.network.head.num_actions
    return _jitted_diagnostics(_config_key(run.config), num_actions, tuple(settings.names))


@functools.lru_cache(maxsize=8)
def _jitted_diagnostics(config_json: str, num_actions: int, names: tuple[str, ...]):
    """Cached like `compile_agent`, so runs of one config compile their diagnostics once."""
    from plasticity.diagnostics import make_diagnostics_fn

    learner = _compile_agent(config_json, num_actions).learner

    def loss_fn(params, inputs, targets):
        batch = {**targets["batch"], "obs_tm1": inputs}
        loss, _ = learner.loss(
            params, targets["target_params"], batch, targets["weights"], targets["rng"]
        )
        return loss

    fn = make_diagnostics_fn(
        learner.network,
        loss_fn,
        names,
        apply_kwargs=lambda key: {"rngs": {"noise": key}},
    )
    return jax.jit(fn)


def _write_diagnostics(
    run: _Run, compiled: CompiledAgent, diagnostics, state: AgentState, previous_params: Any
) -> None:
    batch = _probe_batch(run, state, run.config.diagnostics.batch_size, purpose=3)
    train_state = state.train_state
    inputs = preprocess_observations(batch["obs_tm1"])
    targets = {
        "batch": {key: value for key, value in batch.items() if key != "obs_tm1"},
        "target_params": train_state.extra["target_params"],
        "weights": jnp.ones(batch["r_t"].shape, jnp.float32),
        "rng": jax.random.key(run.counters.frames),
    }
    if previous_params is None:
        previous_params = train_state.params
    learning_rate = optimizer_learning_rate(run.config.optimizer, train_state.step)
    values = diagnostics(
        train_state.params,
        previous_params,
        inputs,
        targets,
        jax.random.key(run.counters.frames),
        learning_rate,
    )
    values = {key: np.asarray(value) for key, value in jax.device_get(values).items()}
    row = run.row(
        "diagnostics", **{k: (v.item() if v.ndim == 0 else v.tolist()) for k, v in values.items()}
    )
    run.write([row])


def _make_intervention(run: _Run, compiled: CompiledAgent):
    settings = run.config.intervention
    if settings.name == "none" or settings.every_frames <= 0:
        return None
    if settings.name == "plasticity_injection":
        raise ValueError(
            "plasticity_injection changes the forward pass; the Atari loop does not support it"
        )
    from plasticity.interventions import make_intervention

    return make_intervention(
        settings.name,
        compiled.learner.network,
        apply_kwargs=lambda key: {"rngs": {"noise": key}},
        **settings.options.to_dict(),
    )


def _intervene(run: _Run, compiled: CompiledAgent, intervention, state: AgentState) -> AgentState:
    batch = _probe_batch(run, state, run.config.intervention.batch_size, purpose=4)
    key = jax.random.key(derive_seed(run.config.seed, run.counters.frames, 5))
    train_state = intervention.apply(
        state.train_state, preprocess_observations(batch["obs_tm1"]), key
    )
    run.write([run.row("intervention", intervention=intervention.name)])
    return state.replace(train_state=train_state)
