"""Actor-learner loop of DQN / Rainbow on Atari: N emulators overlapped with a jitted learner.

One iteration of `AtariLoop.run_chunk`:

1. act: a jitted epsilon-greedy (or noisy) forward pass on the N current observations;
2. ``env.send(actions)``: ale-py's C++ threads start emulating the N agent steps;
3. while they run, XLA runs the replay add of the current timesteps and the learner updates the
   learning plan owes (`agents.sequence.plan_learning`: the replay ratio counted in frames), each
   one a jitted ``sample -> update -> new priorities`` with the train state and replay donated;
4. ``env.recv()`` waits for the emulators; then the periodic events of the plan: diagnostics,
   the intervention, a 'train' row, a progress evaluation (`agents.probes`).

The learner's functions are dispatched asynchronously, so steps 2-4 overlap emulation and learning;
the next act waits for the last update (on-policy up to the updates of one iteration).

The host side is `agents.driver.train_segments` on the run harness (`plasticity.run`), shared with
the MinAtar loop: game sequences (`agents.sequence`: the full 18-action set when several games
are played, the switch policy at every switch, a restarted schedule planned ahead), the
evaluation matrix after every block (`agents.evaluation_matrix`; human-normalized scores beside
the raw returns when episodes are not cut shorter than the references'),
fresh-network references (one block per game, from the sequence's initial network), checkpoints
of the learner, replay, RNG and counters every ``checkpoint_every_frames`` frames and at every
block's end, and resume. An Atari run is one seed; a relaunch restores learner, optimizer,
replay, counters and RNG and the emulators start new episodes (the cut episodes end at their
newest stored timestep in the replay), so it resumes exactly up to the episodes in flight.
Everything is counted in environment frames (agent steps x ``env.frame_skip``). A stop request is
asked after every iteration (a safe point): checkpoints are rare at full scale (every 5M frames),
far longer apart than a scheduler's grace period.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import struct

from agents import configs, probes, sequence
from agents.atari_scores import EvalResult
from agents.atari_env import (
    AtariVectorEnvironment,
    check_action_sets,
    config_of_section,
    minimal_action_names,
    resolve_game,
)
from agents.atari_env import validate_config as validate_env_config
from agents.configs import evaluation_num_envs, validate_config
from agents.driver import open_run, shown_return, train_segments
from agents.evaluation_matrix import evaluation_cells
from agents.learner import (
    Learner,
    check_torso_fits,
    make_learn_step,
    make_learner,
    make_replay,
)
from agents.replay import ReplayState, replay_add, replay_end_episodes
from agents.sequence import (
    GameBlock,
    Segment,
    SwitchPolicy,
    evaluation_message,
    evaluation_scores,
    make_schedule,
    plan_segments,
    switch_row_fields,
)
from plasticity import divergence, runtime
from plasticity.optim import optimizer_learning_rate
from plasticity.run import Run, RunResult, due_mask
from plasticity.train_state import TrainState

NAME = "train_atari"
FULL_ACTION_SET_SIZE = 18
MATRIX_KEYS = ("return_mean", "human_normalized")  # the scores of evaluation_matrix.json
# Fields a relaunch may change without changing what the run computes.
RESUME_FREE_FIELDS = ("env.num_threads", "keep_checkpoints", "learner.grad_norm")


@struct.dataclass
class AgentState:
    """Everything the loop's jitted functions read and write: learner, replay and RNG key."""

    train_state: TrainState
    replay: ReplayState
    rng: jax.Array


class CompiledAgent(NamedTuple):
    """The learner and the jitted functions of the loop, shared by runs with the same config.

    ``act(params, extra, obs, rng, epsilon) -> (actions, rng)``; ``evaluate_act`` adds a static
    ``deterministic``; ``act_and_add(params, extra, replay, obs, frame, reward, discount, first,
    last, rng, epsilon) -> (actions, replay, rng)`` acts and adds the timestep with its actions
    to the replay (donated) in one program; ``learn(train_state, replay, rng,
    importance_exponent) -> (train_state, replay, rng, aux)`` donates the train state and the
    replay; ``diagnose`` and ``intervene`` are the jitted `agents.probes` functions (None when
    switched off).
    """

    learner: Learner
    init: Callable[[jax.Array, jax.ShapeDtypeStruct], TrainState]
    act: Callable[..., tuple[jax.Array, jax.Array]]
    evaluate_act: Callable[..., tuple[jax.Array, jax.Array]]
    act_and_add: Callable[..., tuple[jax.Array, ReplayState, jax.Array]]
    add: Callable[..., ReplayState]
    learn: Callable[..., tuple[TrainState, ReplayState, jax.Array, dict[str, jax.Array]]]
    diagnose: Callable[..., dict[str, jax.Array]] | None
    intervene: Callable[..., TrainState] | None
    intervention: Any


# The config the compiled functions close over; seeds, budgets, env, logging, evaluation settings
# and the replay's sizes and annealing can change without recompiling (jit retraces on new shapes).
_COMPILED_SECTIONS = ("network", "learner", "optimizer", "updates_per_frame", "diagnostics")
_COMPILED_REPLAY_FIELDS = ("prioritized",)
_COMPILED_INTERVENTION_FIELDS = ("name", "batch_size", "sync_target", "options")


def _config_key(config: ml_collections.ConfigDict) -> str:
    compiled = {name: config[name] for name in _COMPILED_SECTIONS}
    compiled["replay"] = {name: config.replay[name] for name in _COMPILED_REPLAY_FIELDS}
    compiled["intervention"] = {
        name: config.intervention[name] for name in _COMPILED_INTERVENTION_FIELDS
    }
    compiled["observation_shape"] = tuple(observation_spec(config).shape)
    return json.dumps(compiled, sort_keys=True, default=lambda value: value.to_dict())


# Acting depends on the network only, adding on nothing: shared by configs that differ elsewhere
# (e.g. a sequence with and without a restarted schedule).
_ACTORS: dict[tuple[str, int], tuple[Callable[..., Any], ...]] = {}
_ADD = jax.jit(replay_add, donate_argnums=0)


def _actor(learner: Learner, config: ml_collections.ConfigDict, num_actions: int):
    network = json.dumps(config.network.to_dict(), sort_keys=True)
    key = (network, config.intervention.name == "plasticity_injection", num_actions)
    if key not in _ACTORS:

        def act(params, extra, obs, rng, epsilon):
            rng, key = jax.random.split(rng)
            return learner.act(params, obs, key, epsilon, extra=extra), rng

        def evaluate_act(params, extra, obs, rng, epsilon, deterministic):
            rng, key = jax.random.split(rng)
            return learner.act(params, obs, key, epsilon, deterministic, extra), rng

        def act_and_add(params, extra, replay, obs, frame, reward, discount, first, last, rng, eps):
            """One training step's device work before the emulators: a call (and its dispatch,
            the host's main cost per step on an accelerator) where acting and adding took two."""
            actions, rng = act(params, extra, obs, rng, eps)
            replay = replay_add(replay, frame, actions, reward, discount, first, last)
            return actions, replay, rng

        _ACTORS[key] = (
            jax.jit(act),
            jax.jit(evaluate_act, static_argnums=5),
            jax.jit(act_and_add, donate_argnums=2),
        )
    return _ACTORS[key]


@functools.lru_cache(maxsize=8)
def _compile_agent(config_json: str, num_actions: int) -> CompiledAgent:
    config = ml_collections.ConfigDict(json.loads(config_json))
    learner = make_learner(config, num_actions, tuple(config.observation_shape))
    learn_step = make_learn_step(learner, config)
    act, evaluate_act, act_and_add = _actor(learner, config, num_actions)

    def learn(train_state, replay, rng, importance_exponent):
        rng, key = jax.random.split(rng)
        train_state, replay, aux = learn_step(train_state, replay, key, importance_exponent)
        return train_state, replay, rng, aux

    intervene = probes.make_intervene(config, learner)
    return CompiledAgent(
        learner=learner,
        init=jax.jit(learner.init, static_argnums=1),
        act=act,
        evaluate_act=evaluate_act,
        act_and_add=act_and_add,
        add=_ADD,
        learn=jax.jit(learn, donate_argnums=(0, 1)),
        diagnose=jax.jit(probes.make_diagnose(config, learner)),
        intervene=None if intervene is None else jax.jit(intervene),
        intervention=probes.make_intervention(config, learner),
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


def make_env(
    config: ml_collections.ConfigDict, game: str, num_envs: int, seed: int, full_action_space: bool
) -> AtariVectorEnvironment:
    """A vector env of ``game`` with the preprocessing of ``config.env``."""
    return AtariVectorEnvironment(
        config_of_section(config.env, game, num_envs, seed, full_action_space)
    )


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

    Committed to this process's first device, as a state restored from a checkpoint is: the compiled loop
    functions then see the same input shardings whether a run starts or resumes (a mismatch
    would compile every one of them again after a resume).
    """
    init_key, loop_key = jax.random.split(jax.random.key(seed))
    train_state = compiled.init(init_key, observation_spec(config))
    train_state = probes.with_intervention_state(train_state, compiled.intervention)
    size = config.env.screen_size
    replay = make_replay(config, (size, size), num_envs, config.env.stack)
    state = AgentState(train_state=train_state, replay=replay, rng=loop_key)
    return jax.device_put(state, jax.local_devices()[0])


def evaluate(
    compiled: CompiledAgent,
    train_state: TrainState,
    config: ml_collections.ConfigDict,
    game: str,
    seed: int,
    full_action_space: bool,
    env: AtariVectorEnvironment | None = None,
) -> EvalResult:
    """Plays ``config.evaluation.episodes`` episodes of ``game`` with the train state's network.

    Envs share the episodes evenly (env i plays its quota, later episodes are ignored), so short
    episodes are not over-counted; at most ``evaluation.max_frames`` frames of envs still owing
    episodes are played and episodes unfinished by then are dropped (`evaluation_num_envs` keeps
    a longest episode within every env's share). Epsilon ``evaluation.epsilon``; noisy nets sample
    their noise unless ``evaluation.noise`` is False. Uses (and resets) ``env`` when given.
    """
    evaluation = config.evaluation
    own_env = env is None
    if own_env:
        env = make_env(config, game, evaluation_num_envs(config), seed, full_action_space)
    num_envs = env.num_envs
    quota = np.full(num_envs, evaluation.episodes // num_envs)
    quota[: evaluation.episodes % num_envs] += 1
    rng = jax.device_put(jax.random.key(seed), jax.local_devices()[0])  # as the params: committed
    returns: list[float] = []
    finished = np.zeros(num_envs, np.int64)
    frames = 0
    try:
        timestep = env.reset(seed=seed)
        while np.any(finished < quota) and frames < evaluation.max_frames:
            actions, rng = compiled.evaluate_act(
                train_state.params,
                train_state.extra,
                timestep.observation,
                rng,
                evaluation.epsilon,
                not evaluation.noise,
            )
            owing = int(np.sum(finished < quota))  # envs done with their quota spend nothing
            timestep = env.step(np.asarray(actions))
            frames += owing * config.env.frame_skip
            for i in np.flatnonzero(timestep.last):
                if finished[i] < quota[i]:
                    returns.append(float(timestep.episode_return[i]))
                finished[i] += 1
    finally:
        if own_env:
            env.close()
    return EvalResult(
        game=game, returns=returns, frames=frames, max_episode_frames=config.env.max_episode_frames
    )


# ---------------------------------------------------------------------------------------------
# The host side: one `agents.driver.Loop`.


@functools.lru_cache(maxsize=None)
def _jitted_switch(policy: SwitchPolicy):
    """`agents.sequence.apply_switch_policy` for one policy, the state and replay donated."""
    return jax.jit(
        functools.partial(sequence.apply_switch_policy, policy=policy), donate_argnums=(0, 1)
    )


_moments_norm = jax.jit(sequence.optimizer_moments_norm)
_end_episodes = jax.jit(replay_end_episodes)


def _mean_scalars(rows: list[dict[str, jax.Array]]) -> dict[str, float]:
    """Means over the learner's scalar metrics since the last log row (one device fetch)."""
    if not rows:
        return {}
    fetched = jax.device_get(rows)
    return {key: float(np.mean([row[key] for row in fetched])) for key in fetched[0]}


def _last_updates_before(updates: np.ndarray, due: np.ndarray) -> np.ndarray:
    """Marks, for every iteration where ``due`` holds, the last iteration up to it that makes an
    update: the parameters before that update are what a diagnostics row's update ratios
    compare with, so only those are copied (not before every update)."""
    marks = np.zeros(len(updates), bool)
    last = -1
    for i in range(len(updates)):
        if updates[i] > 0:
            last = i
        if due[i] and last >= 0:
            marks[last] = True
    return marks


class AtariLoop:
    """The Atari trainer's part of `agents.driver.train_segments`: one seed, a host loop.

    Rows: 'train' every ``log_every_frames`` and at each chunk's end (its losses checked for
    NaN/Inf first, naming the exact update), 'diagnostics' and 'intervention' where due, 'eval'
    rows inside a block every ``evaluation.every_frames`` (``end_of_block`` False), 'switch' at
    every game switch and the evaluation matrix ('eval' / 'eval_fresh', ``end_of_block`` True,
    with human-normalized scores) after every block.
    """

    matrix_keys = MATRIX_KEYS

    def __init__(self, segments: Sequence[Segment], num_actions: int):
        self.segments = list(segments)
        self.num_actions = num_actions
        config = segments[0].config
        self.seed = int(config.seed)
        self.seeds = (self.seed,)
        self.full_action_space = bool(config.env.full_action_space)
        self.env: AtariVectorEnvironment | None = None
        self.eval_env: AtariVectorEnvironment | None = None
        self.timestep = None
        self.episodes = self.evaluations = 0
        self.last_returns: dict[str, float] = {}
        self.learner_rows: list[dict[str, jax.Array]] = []
        self.before, self.before_step = None, -1  # parameters before update `before_step`
        self.compiled_parts: set[str] = set()  # jitted parts called once already
        self.status: str | None = None
        self.episode_returns: list[float] = []
        self.last_log = (time.perf_counter(), 0, 0)  # (time, frames, updates) of the last row

    def compiled(self, segment: Segment) -> CompiledAgent:
        return compile_agent(segment.config, self.num_actions)

    def init(self, segment: Segment) -> AgentState:
        self.episodes = self.evaluations = 0
        self.last_returns, self.before, self.before_step = {}, None, -1
        config = segment.config
        return init_agent_state(config, self.compiled(segment), config.env.num_envs, self.seed)

    def template(self, segment: Segment) -> Any:
        config = segment.config
        compiled = self.compiled(segment)
        return jax.eval_shape(
            lambda: init_agent_state(config, compiled, config.env.num_envs, self.seed)
        )

    def restored(self, state: AgentState, metadata: dict[str, Any]) -> AgentState:
        """The emulators start new episodes: the ones in flight end at their newest timestep."""
        self.episodes = int(metadata.get("episodes", 0))
        self.evaluations = int(metadata.get("evaluations", 0))
        self.last_returns = dict(metadata.get("last_returns", {}))
        # Committed to this process's device as a fresh state is (the same compiled programs).
        state = jax.device_put(state, jax.local_devices()[0])
        return state.replace(replay=_end_episodes(state.replay))

    def metadata(self) -> dict[str, Any]:
        return {
            "episodes": self.episodes,
            "evaluations": self.evaluations,
            "last_returns": self.last_returns,
        }

    # Blocks ----------------------------------------------------------------------------------

    def start_block(self, run: Run, state, segment: Segment, block: int, resumed: bool):
        config, info = segment.config, segment.blocks[block]
        rows = []
        if block > 0 and not resumed:
            with run.phase("switching"):
                state, rows = self._switch(run, state, segment, block)
        start = 0
        if resumed:
            start = run.done  # a different emulator seed than the interrupted launch's
        env_seed = derive_seed(self.seed, info.index, start, 0)
        with run.phase("starting emulators"):
            self.env = make_env(
                config, info.game, config.env.num_envs, env_seed, self.full_action_space
            )
            if self.env.num_actions != self.num_actions:
                raise ValueError(
                    f"{info.game} has {self.env.num_actions} actions but the network has "
                    f"{self.num_actions}; set env.full_action_space=True to play games with "
                    "different action sets"
                )
            self.timestep = self.env.reset()
        self.learner_rows, self.episode_returns = [], []
        self.last_log = (time.perf_counter(), 0, 0)
        return state, rows

    def _switch(self, run: Run, state: AgentState, segment: Segment, block: int):
        """The interventions due at the block's start (`Segment.interventions_at_start`: for
        ``at_switch``, and a periodic one deferred past the last block's evaluation; on the
        replay of the game that ended, before a flush empties it), the switch policy between two
        blocks, and the 'switch' row (and an 'intervention' row each)."""
        config = segment.config
        settings = config.intervention
        causes = segment.interventions_at_start(block)
        for i in range(len(causes)):
            seed = derive_seed(self.seed, block, 5, *([i] if i else []))
            state = self._intervene(state, segment, seed)
        policy = SwitchPolicy.from_config(config.switch)
        train_state, replay = _jitted_switch(policy)(state.train_state, state.replay)
        step = int(train_state.step)
        planned = segment.plan.block_start_updates[block]
        if step != planned:
            raise RuntimeError(f"block {block} starts after {step} updates, planned {planned}")
        rate = float(optimizer_learning_rate(config.optimizer, step))
        moments = float(_moments_norm(train_state))
        items = int(replay.size) * segment.num_envs  # slots written per env x envs
        fields = switch_row_fields(segment, block, policy, rate, moments, items)
        rows = [segment.row("switch", block, -1, self.seed, **fields)]
        state = state.replace(train_state=train_state, replay=replay)
        rows += [
            segment.row("intervention", block, -1, self.seed, name=settings.name, cause=cause)
            for cause in causes
        ]
        return state, rows

    def end_block(self) -> None:
        for env in (self.env, self.eval_env):
            if env is not None:
                env.close()
        self.env = self.eval_env = None

    # Chunks ----------------------------------------------------------------------------------

    def run_chunk(self, run: Run, state, segment: Segment, block: int, start: int, stop: int, log):
        """Plays iterations [start, stop) of ``block``: act and replay add (one call),
        ``env.send``, the owed updates (overlapping the emulators), ``env.recv``; then the
        periodic events. Asks for a stop request after every iteration and stops there (a safe
        point) when one arrived."""
        config, compiled, info = segment.config, self.compiled(segment), segment.blocks[block]
        window = segment.plan.window(block, start, stop)
        values = segment.schedule_values(window)
        step, frames = segment.frames_per_iteration, window["frames_after"]
        learning = window["learning"]
        diagnose = due_mask(frames, step, config.diagnostics.every_frames) & learning
        diagnose &= window["updates_after"] > 0
        intervene = segment.periodic_interventions(block, window)
        keep_before = _last_updates_before(window["updates"], diagnose)
        log_at = due_mask(frames, step, config.log_every_frames)
        progress_eval = due_mask(frames, step, config.evaluation.every_frames)
        shown, applied = f"{info.game} ({block + 1}/{len(segment.blocks)})", []
        run.show(
            game=shown,
            run=segment.name if segment.is_reference else None,
            last_return=self._shown_return(info.game),
        )
        for i in range(stop - start):
            iteration = start + i
            filling = None if window["learning"][i] else "filling replay"
            if filling != self.status:
                self.status = filling
                run.show(status=filling)
            timestep = self.timestep
            with self._compiling(run, "actor"):
                actions, replay, rng = compiled.act_and_add(
                    state.train_state.params,
                    state.train_state.extra,
                    state.replay,
                    timestep.observation,
                    timestep.frame,
                    timestep.reward,
                    timestep.discount,
                    timestep.first,
                    timestep.last,
                    state.rng,
                    values["epsilon"][i],
                )
            self.env.send(np.asarray(actions))
            state = state.replace(replay=replay, rng=rng)
            for k in range(int(window["updates"][i])):
                if keep_before[i] and k == window["updates"][i] - 1:  # for the update ratios
                    self.before = jax.tree.map(jnp.copy, state.train_state.params)
                    self.before_step = int(window["updates_before"][i]) + k
                with self._compiling(run, "learner"):
                    train_state, replay, rng, aux = compiled.learn(
                        state.train_state,
                        state.replay,
                        state.rng,
                        values["importance_exponent"][i],
                    )
                state = state.replace(train_state=train_state, replay=replay, rng=rng)
                self.learner_rows.append({k: v for k, v in aux.items() if k != "per_example"})
            self.timestep = self.env.recv()
            for e in np.flatnonzero(self.timestep.last):
                value = float(self.timestep.episode_return[e])
                self.episode_returns.append(value)
                self.last_returns[info.game] = value
                self.episodes += 1
            if diagnose[i]:
                with self._compiling(run, "diagnostics"):
                    log([self._diagnostics(state, segment, block, iteration, self.before)])
            block_end = iteration == segment.plan.iterations[block] - 1
            if progress_eval[i] and not block_end and not segment.is_reference:  # before any
                row = self._progress_evaluation(run, state, segment, block, iteration)  # reset
                log([row])
            if intervene[i]:
                state = self._intervene(state, segment, derive_seed(self.seed, int(frames[i]), 5))
                applied.append(iteration)
                if not segment.summarizes_interventions:
                    log(segment.intervention_rows(block, applied[-1:], self.seed))
            stopping = i < stop - start - 1 and run.preemption_requested()
            last = i == stop - start - 1 or stopping
            if log_at[i] or last:
                log([self._train_row(run, segment, block, iteration, values, i)])
            run.advance(
                step, updates=int(window["updates"][i]), last_return=self._shown_return(info.game)
            )
            if stopping:
                stop = iteration + 1
                break
        if segment.summarizes_interventions:  # one row for the chunk's applications
            log(segment.intervention_rows(block, applied, self.seed))
        return state, stop

    def _compiling(self, run: Run, part: str):
        """The progress bar's 'compiling' phase around the first call of a jitted ``part``."""
        if part in self.compiled_parts:
            return contextlib.nullcontext()
        self.compiled_parts.add(part)
        return run.phase(f"compiling the {part}")

    def _shown_return(self, game: str) -> str:
        return shown_return(self.last_returns.get(game))

    def _train_row(self, run: Run, segment, block, iteration, values, i) -> dict[str, Any]:
        """The 'train' row since the last one; its losses are checked for divergence first."""
        self.learner_rows = jax.device_get(self.learner_rows)
        row = segment.row("train", block, iteration, self.seed)
        losses = np.array([r["loss"] for r in self.learner_rows], np.float64)
        if not np.all(np.isfinite(losses)):
            divergence.check_consecutive_steps(
                losses,
                row["updates"],
                metric="loss",
                context=f"game {row['game']}, seed {self.seed}, frame {row['frames']:,}",
                kept=run.kept(),
            )
        now = time.perf_counter()
        last_time, last_frames, last_updates = self.last_log
        elapsed = max(now - last_time, 1e-9)
        frames_since = row["frames"] - last_frames if last_frames else None
        row.update(
            episodes=self.episodes,
            return_mean=float(np.mean(self.episode_returns)) if self.episode_returns else math.nan,
            episodes_since_last_row=len(self.episode_returns),
            epsilon=float(values["epsilon"][i]),
            **segment.importance_field(values, i),
            **_mean_scalars(self.learner_rows),
        )
        if frames_since is not None:
            row["frames_per_second"] = frames_since / elapsed
            row["updates_per_second"] = (row["updates"] - last_updates) / elapsed
        self.learner_rows.clear()
        self.episode_returns.clear()
        self.last_log = (now, row["frames"], row["updates"])
        return row

    # Diagnostics and interventions ------------------------------------------------------------

    def _diagnostics(self, state, segment, block, iteration, before) -> dict[str, Any]:
        compiled = self.compiled(segment)
        key = jax.random.key(
            derive_seed(self.seed, segment.row("", block, iteration, 0)["frames"], 3)
        )
        train_state = state.train_state
        # Known only when copied right before the last update (none since a resume: null).
        known = before is not None and self.before_step == int(train_state.step) - 1
        previous = before if known else train_state.params
        values = compiled.diagnose(train_state, state.replay, previous, key, known)
        values = {name: np.asarray(value).item() for name, value in jax.device_get(values).items()}
        return segment.row("diagnostics", block, iteration, self.seed, **values)

    def _intervene(self, state: AgentState, segment: Segment, seed: int) -> AgentState:
        self.before_step = -1  # an update ratio before the next update would measure this
        train_state = self.compiled(segment).intervene(
            state.train_state, state.replay, jax.random.key(seed)
        )
        return state.replace(train_state=train_state)

    # Evaluation ------------------------------------------------------------------------------

    def _eval_env(self, segment: Segment, game: str, block: int, purpose: int):
        config = segment.config
        seed = derive_seed(self.seed, block, 1, purpose)
        return make_env(config, game, evaluation_num_envs(config), seed, self.full_action_space)

    def _evaluation_row(self, state, segment, block, iteration, env, game, event, **fields):
        seed = derive_seed(self.seed, block, self.evaluations, 2)
        started = time.perf_counter()
        result = evaluate(
            self.compiled(segment),
            state.train_state,
            segment.config,
            game,
            seed,
            self.full_action_space,
            env=env,
        )
        self.evaluations += 1
        row = segment.row(event, block, iteration, self.seed)
        row.update(
            game=game,
            **fields,
            return_mean=result.mean_return,
            return_std=float(np.std(result.returns)) if result.returns else math.nan,
            episodes=len(result.returns),
            eval_frames=result.frames,
            human_normalized=result.human_normalized,
            seconds=time.perf_counter() - started,
        )
        return row

    def _progress_evaluation(self, run, state, segment, block, iteration) -> dict[str, Any]:
        """An evaluation of the current game inside a block (``evaluation.every_frames``)."""
        game = segment.blocks[block].game
        if self.eval_env is None:
            self.eval_env = self._eval_env(segment, game, block, 0)
        with run.phase("evaluating"):
            row = self._evaluation_row(
                state,
                segment,
                block,
                iteration,
                self.eval_env,
                game,
                "eval",
                trained_game=game,
                end_of_block=False,
            )
        run.message(f"eval at {row['frames']:,} frames: {evaluation_scores([row])}")
        return row

    def evaluate(self, run: Run, state, segment: Segment, block: int) -> list[dict[str, Any]]:
        """The evaluation matrix cells after ``block``: every game seen so far (a reference: its
        own game); the block's game reuses the progress evaluations' emulators."""
        event = "eval_fresh" if segment.is_reference else "eval"
        info = segment.blocks[block]
        last = segment.plan.iterations[block] - 1
        rows = []
        with run.phase("evaluating"):
            for purpose, cell in enumerate(evaluation_cells(segment.blocks, block), start=1):
                own = cell.game == info.game
                if own and self.eval_env is None:
                    self.eval_env = self._eval_env(segment, cell.game, block, 0)
                env = self.eval_env if own else self._eval_env(segment, cell.game, block, purpose)
                try:
                    rows.append(
                        self._evaluation_row(
                            state,
                            segment,
                            block,
                            last,
                            env,
                            cell.game,
                            event,
                            trained_game=cell.trained_game,
                            visit=cell.visit,
                            end_of_block=True,
                        )
                    )
                finally:
                    if not own:
                        env.close()
        run.message(evaluation_message(segment, block, rows))
        return rows

    def params(self, state: AgentState) -> Any:
        return state.train_state.params

    def where(self, segment: Segment, block: int) -> str:
        return f"{segment.name}, seed {self.seed}, game {segment.blocks[block].game}"


# ---------------------------------------------------------------------------------------------
# Training.


def make_blocks(config: ml_collections.ConfigDict) -> list[GameBlock]:
    """The schedule of a run: ``config.games`` x ``cycles``, ``frames_per_game`` each; names are
    made canonical ('Pong', 'ALE/Pong-v5' -> 'pong'), an unknown one is a one-line error."""
    return make_schedule(config.games, config.frames_per_game, config.cycles, resolve=resolve_game)


def check_memory(config: ml_collections.ConfigDict) -> None:
    """One-line ValueError when the replay cannot fit in the device's memory."""
    size = config.env.screen_size
    shapes = jax.eval_shape(
        lambda: make_replay(config, (size, size), config.env.num_envs, config.env.stack)
    )
    needed = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(shapes))
    runtime.check_fits(needed, f"the frames of a {config.replay.capacity:,}-transition replay")


def plan_run(config: ml_collections.ConfigDict) -> list[Segment]:
    """The run's segments, after every check that needs no work dir: the config, the emulator's
    settings, the learning plan and schedule, the memory. A one-line ValueError otherwise (the
    launcher plans every run of a launch before the first starts)."""
    validate_config(config, "atari")
    if config.num_seeds != 1:
        raise ValueError("an Atari run trains one seed; the launcher runs each seed on its own")
    blocks = make_blocks(config)
    validate_env_config(config_of_section(config.env, blocks[0].game, 1, config.seed, False))
    check_torso_fits(config.network, observation_spec(config).shape)
    segments = plan_segments(config, blocks)  # settles env.full_action_space left unset
    full_action_space = bool(segments[0].config.env.full_action_space)
    check_action_sets(tuple(block.game for block in blocks), full_action_space)
    check_memory(config)
    return segments


def train(
    config: ml_collections.ConfigDict,
    workdir: str | None = None,
    *,
    name: str = NAME,
    show_progress: bool | None = None,
    should_stop: Callable[[], bool] | None = None,
    stop_after_checkpoints: int | None = None,
    signal_name: Callable[[], str | None] | None = None,
    label: str | None = None,
    independent: bool = False,
) -> RunResult:
    """Trains one seed through ``config.games`` (and the fresh references), see the module
    docstring. ``independent``: this process trains this run alone in a multi-process job
    (`plasticity.run.Run`); ``label`` names the run in the harness's lines (one of a launch's
    several). Bad settings raise a one-line ValueError before anything is written or built; a
    NaN/Inf loss or parameter raises `plasticity.divergence.DivergenceError` before the row or
    checkpoint holding it is written. The result's outputs: ``state`` (the sequence's final
    `AgentState` when this call finished it) and ``evaluations`` (the evaluation rows written).
    """
    segments = plan_run(config)
    full_action_space = bool(segments[0].config.env.full_action_space)
    first_game = segments[0].blocks[0].game
    num_actions = (
        FULL_ACTION_SET_SIZE if full_action_space else len(minimal_action_names(first_game))
    )
    harness = open_run(
        name,
        workdir,
        config,
        segments,
        RESUME_FREE_FIELDS,
        show_progress=show_progress,
        should_stop=should_stop,
        stop_after_checkpoints=stop_after_checkpoints,
        signal_name=signal_name,
        label=label,
        defaults=configs.get_config(config.agent, "atari").to_dict(),
        independent=independent,
    )
    loop = AtariLoop(segments, num_actions)
    with harness as run:
        return train_segments(run, segments, loop, int(config.checkpoint_every_frames))
