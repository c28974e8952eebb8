"""DQN / Rainbow on MinAtar game sequences (gymnax), the whole loop compiled with XLA.

One loop iteration, for N vmapped environments of one seed: act (epsilon-greedy or noisy) on the
current observations, add the timestep to the replay, step the environments, make the learner
updates the replay ratio owes, then compute the plasticity diagnostics and apply the intervention
when they are due (`agents.probes`). A chunk of iterations is one ``lax.scan``; seeds run as
``jit(vmap(chunk))`` (or ``lax.map`` over seeds, faster on CPUs, see ``run.runs_per_batch``), and
``run.mesh`` splits them over the local devices (`seed_mesh`), each device running its own seeds
with no communication. The games of a run share one program (`agents.minatar_env.MinAtarSuite`).

The host side is `agents.driver.train_segments` on the run harness (`plasticity.run`): between
chunks it writes rows and checkpoints; between blocks it evaluates and applies the switch policy;
the learning plan (`agents.sequence.plan_learning`) gives every iteration's updates, exploration
epsilon, importance exponent and whether diagnostics or the intervention are due, as scan inputs
shared by all seeds, so the learner's update loop and the periodic events stay real (unbatched)
control flow under ``vmap``. One MinAtar step is one frame: ``frames`` = ``agent_steps`` in every
row. All randomness lives in the checkpointed state or is derived from (seed, block, game), so
on CPU a resumed run ends bit-identical to an uninterrupted one.

Work dir: ``config.json`` (the config and the schedule), ``run_info.json``, ``metrics.jsonl``
(rows carry ``step`` (= updates), ``frames``, ``agent_steps``, ``updates``, ``game``, ``block``,
``visit``, ``cycle`` and ``seed``; events 'train', 'diagnostics', 'intervention', 'switch',
'eval', 'eval_fresh', 'resume'), ``evaluation_matrix.json`` (`agents.evaluation_matrix`),
TensorBoard scalars (seed means) keyed by frames and Orbax checkpoints after every chunk.
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
from jax.sharding import Mesh

from agents import configs, probes, sequence
from agents.configs import frames_per_iteration, replay_capacity, validate_config
from agents.driver import latest_return, open_run, shown_return, train_segments
from agents.evaluation_matrix import evaluation_cells
from agents.learner import Learner, check_torso_fits, make_learn_step, make_learner
from agents.minatar_env import (
    CHANNELS,
    SCREEN,
    EnvCarry,
    MinAtarSuite,
    Timestep,
    make_suite,
    resolve_minatar_game,
)
from agents.replay import ReplayState, replay_add, replay_init
from agents.sequence import (
    GameBlock,
    Segment,
    SwitchPolicy,
    distinct_games,
    evaluation_message,
    make_schedule,
    plan_segments,
    switch_row_fields,
)
from plasticity import distributed, divergence, runtime
from plasticity import mesh as mesh_lib
from plasticity.optim import optimizer_learning_rate
from plasticity.run import Run, RunResult, due_mask
from plasticity.train_state import TrainState

NAME = "train_minatar"
# Fields a relaunch may change without changing the results (up to float rounding; ``run`` is how
# the seeds run on the hardware); without ``learner.grad_norm`` the rows after lack its norm.
RESUME_FREE_FIELDS = ("run", "keep_checkpoints", "learner.grad_norm")


def seed_mesh(config: ml_collections.ConfigDict) -> Mesh | None:
    """The device mesh the seeds are split over (``run.mesh``), or None for one device.

    Only a ``seed`` axis: seeds are independent runs, so each device plays and learns its own
    seeds with no communication (`plasticity.mesh.over_leading_axis`), and results do not
    depend on the mesh. The mesh spans every device of every process: in a multi-process job
    (`plasticity.distributed`) each process drives its own devices' seeds, process 0 writes the
    work dir and every process takes part in the checkpoints; there the seeds must fill every
    device.
    """
    spec = str(config.run.get("mesh", "none") or "none")
    processes = jax.process_count()
    if spec == "none":
        if processes > 1:
            raise ValueError(
                "a multi-process MinAtar job lays its seeds over every device: use "
                "--config.run.mesh=auto (or seed:N)"
            )
        return None
    mesh = mesh_lib.make_mesh(spec, jax.devices(), num_runs=int(config.num_seeds))
    if tuple(mesh.axis_names) != (mesh_lib.SEED_AXIS,):
        raise ValueError(f"run.mesh {spec!r}: MinAtar runs split only a 'seed' axis")
    num_seeds = int(config.num_seeds)
    mesh_lib.check_seed_split(mesh, spec, num_seeds, f"num_seeds={num_seeds}")
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


def learner_scalars(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The `LEARNER_SCALARS` a run computes: all of them, less ``grad_norm`` when
    ``learner.grad_norm`` is False."""
    if config.learner.grad_norm:
        return LEARNER_SCALARS
    return tuple(name for name in LEARNER_SCALARS if name != "grad_norm")


def pack_episodes(last: jax.Array, carry) -> jax.Array:
    """(3, envs) float32 of an iteration: episode ended, its return, its length (exact in
    float32 below 2^24 steps). One stacked output per iteration, not three: on a GPU each
    output of the compiled loop is a copy of its own at every iteration."""
    return jnp.stack(
        [last.astype(jnp.float32), carry.episode_return, carry.episode_steps.astype(jnp.float32)]
    )


def unpack_outputs(outputs: dict[str, Any], scalars: Sequence[str]) -> dict[str, Any]:
    """A chunk's fetched outputs by name: ``ended``, ``returns``, ``lengths`` (seeds, T, envs)
    and ``learner`` {scalar: (seeds, T)}, from `pack_episodes` and the stacked learner sums."""
    episodes, learner = np.asarray(outputs["episodes"]), np.asarray(outputs["learner"])
    unpacked = {k: v for k, v in outputs.items() if k not in ("episodes", "learner")}
    unpacked.update(
        ended=episodes[:, :, 0] > 0.5,
        returns=episodes[:, :, 1],
        lengths=episodes[:, :, 2].astype(np.int64),
        learner={name: learner[..., i] for i, name in enumerate(scalars)},
    )
    return unpacked


class MinAtarAgent(NamedTuple):
    """The jitted programs of a MinAtar run; every function takes and returns seed-batched state.

    * ``init(seeds) -> LoopState``: seed s gets ``jax.random.key(seed)``'s network, replay, envs.
    * ``place(state) -> state``: the state on the run's devices (a restored checkpoint's).
    * ``start_block(state, game_index, policy, interventions) -> state``: the intervention
      ``interventions`` times (static; `agents.sequence.Segment.interventions_at_start`), the
      switch policy (`agents.sequence.apply_switch_policy`, ``policy`` static; a no-op at the
      first block), then new episodes of the block's game.
    * ``moments_norm(state) -> (seeds,)``: global norm of the optimizer's moments.
    * ``run_chunk(state, game_index, plan) -> (state, outputs)``: a ``lax.scan`` over the plan's
      iterations (``epsilon``, ``importance_exponent``, ``updates``, ``diagnose``,
      ``intervene``, each (T,), shared by all seeds, so the update loop, the diagnostics and the
      intervention stay real, unbatched control flow under vmap). Outputs, with leading axes
      (seeds, T): ``episodes`` (`pack_episodes`), ``learner`` (sums over the iteration's
      updates of `learner_scalars`, stacked in their order) and ``diagnostics`` (values where
      ``diagnose``, zeros elsewhere); `unpack_outputs` names them. The state is donated.
    * ``evaluate(params, extra, game_index, seeds, salt) -> (returns, finished)``, each (seeds,
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

    def over(state, *shared):
        if jax.tree.leaves(state)[0].shape[0] == 1:
            # One seed: no seed axis at all. A vmap of one lays the update's weight gradients out
            # transposed and every optimizer step then reads them across the grain (1.4x slower).
            one = fn(jax.tree.map(lambda x: x[0], state), *shared)
            return jax.tree.map(lambda x: x[None], one)
        return mesh_lib.map_runs(lambda s: fn(s, *shared), state, per_batch)

    return over


# Fields that only the host-side plan reads: runs differing in them share compiled programs.
_HOST_ONLY_FIELDS = (
    "replay.min_fill_fraction",
    "replay.importance_exponent_begin",
    "replay.importance_exponent_end",
    "replay.importance_exponent_anneal_frames",
    "evaluation.fresh_reference",
    "diagnostics.every_frames",
    "intervention.every_frames",
    "intervention.at_switch",
)


def _compiled_key(config: ml_collections.ConfigDict) -> str:
    """The JSON of the config sections the compiled programs read."""
    sections = ("agent", "network", "learner", "optimizer", "replay", "updates_per_frame")
    sections += ("env", "evaluation", "diagnostics", "intervention", "run")
    picked = json.loads(
        json.dumps({name: config[name] for name in sections}, default=lambda value: value.to_dict())
    )
    picked["diagnostics"]["on"] = config.diagnostics.every_frames > 0
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
    learner = make_learner(config, suite.num_actions, suite.observation_spec.shape)
    learn_step = make_learn_step(learner, config)
    num_envs = int(env.num_envs)
    capacity = replay_capacity(config)
    spec = suite.observation_spec
    per_batch = runs_per_batch(config)
    diagnose_fn = probes.make_diagnose(config, learner) if config.diagnostics.on else None
    intervention = probes.make_intervention(config, learner)
    intervene_fn = probes.make_intervene(config, learner)
    evaluation = config.evaluation
    scalars = learner_scalars(config)
    max_updates = sequence.max_updates_per_iteration(
        frames_per_iteration(config), config.updates_per_frame
    )

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
        train_state = probes.with_intervention_state(learner.init(init_key, spec), intervention)
        replay = replay_init(
            capacity,
            num_envs,
            spec.shape,
            stack_size=1,
            max_n_step=int(config.learner.n_step),
            priority_exponent=float(config.replay.priority_exponent),
            frame_dtype=jnp.bool_,
            keep_priorities=bool(config.replay.prioritized),
        )
        carry = suite.init(num_envs)
        return LoopState(train_state, replay, carry, empty_timestep(num_envs), loop_key)

    def start_one(state: LoopState, game_index, policy: SwitchPolicy, interventions: int):
        rng, key = jax.random.split(state.rng)
        train_state = state.train_state
        for i in range(interventions):  # on the finished game's transitions, before a flush
            train_state = intervene_fn(
                train_state, state.replay, jax.random.fold_in(key, 1 + 2 * i)
            )
        train_state, replay = sequence.apply_switch_policy(train_state, state.replay, policy)
        carry, timestep = suite.begin(state.env, game_index, key)
        return LoopState(train_state, replay, carry, timestep, rng)

    def learn(train_state, replay, previous, count, key, beta):
        """``count`` updates, and the parameters before the last one (or ``previous``, None when
        no diagnostics read them): the plan's bound (`sequence.max_updates_per_iteration`)
        unrolled, each a ``lax.cond`` on ``i < count``. A loop up to a device-valued count makes a
        GPU read it back to the host at every iteration, a sync that stalls the compiled loop; a
        conditional stays in its CUDA graph."""

        def one(i, carry):
            def update(carry):
                train_state, replay, previous, sums = carry
                before = None if previous is None else train_state.params
                train_state, replay, aux = learn_step(
                    train_state, replay, jax.random.fold_in(key, i), beta
                )
                sums = {name: sums[name] + aux[name].astype(jnp.float32) for name in scalars}
                return train_state, replay, before, sums

            return jax.lax.cond(i < count, update, lambda carry: carry, carry)

        carry = (train_state, replay, previous, {n: jnp.zeros((), jnp.float32) for n in scalars})
        for i in range(max_updates):  # unrolled: a handful of trips at most
            carry = one(i, carry)
        return carry

    def chunk_one(state: LoopState, game_index: jax.Array, plan: dict[str, jax.Array]):
        def body(carry: tuple[LoopState, Any, jax.Array], step: dict[str, jax.Array]):
            state, previous, updated = carry  # updated: the chunk has made an update
            rng, act_key, env_key, learn_key, diagnose_key = jax.random.split(state.rng, 5)
            timestep = state.timestep
            params, extra = state.train_state.params, state.train_state.extra
            actions = learner.act(
                params, timestep.observation, act_key, step["epsilon"], extra=extra
            )
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
                "episodes": pack_episodes(timestep.last, carry),
                "learner": jnp.stack([sums[name] for name in scalars]),
            }
            if diagnose_fn is not None:
                updated = updated | (step["updates"] > 0)
                arguments = (train_state, replay, previous, diagnose_key, updated)
                zeros = jax.tree.map(
                    lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(diagnose_fn, *arguments)
                )
                outputs["diagnostics"] = jax.lax.cond(
                    step["diagnose"], diagnose_fn, lambda *_: zeros, *arguments
                )
            if intervene_fn is not None:
                key = jax.random.fold_in(diagnose_key, 1)
                train_state = jax.lax.cond(
                    step["intervene"],
                    lambda ts: intervene_fn(ts, replay, key),
                    lambda ts: ts,
                    train_state,
                )
                updated = updated & ~step["intervene"]  # a ratio until the next update measures it
            state = LoopState(train_state, replay, carry, timestep, rng)
            return (state, previous, updated), outputs

        # Update ratios compare with the parameters before the newest update of the chunk.
        previous = None if diagnose_fn is None else state.train_state.params
        (state, *_), outputs = jax.lax.scan(body, (state, previous, jnp.array(False)), plan)
        return state, outputs

    def evaluate_one(params: Any, extra, game_index: jax.Array, seed: jax.Array, salt: jax.Array):
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
                params, timestep.observation, act_key, evaluation.epsilon, deterministic, extra
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

    def evaluate_seeds(params, extra, game_index, seeds, salt):
        one = lambda p_e_s, g, t: evaluate_one(p_e_s[0], p_e_s[1], g, p_e_s[2], t)  # noqa: E731
        return _over_seeds(one, per_batch, mesh)((params, extra, seeds), game_index, salt)

    def start_seeds(state: LoopState, game_index, policy: SwitchPolicy, interventions: int):
        one = lambda s, g: start_one(s, g, policy, interventions)  # noqa: E731
        return _over_seeds(one, per_batch, mesh)(state, game_index)

    placed = None if mesh is None else mesh_lib.leading_axis_sharding(mesh)
    return MinAtarAgent(
        config=config,
        suite=suite,
        learner=learner,
        init=jax.jit(jax.vmap(init_one), out_shardings=placed),
        place=(lambda state: state) if placed is None else (lambda s: jax.device_put(s, placed)),
        start_block=jax.jit(start_seeds, static_argnums=(2, 3)),
        moments_norm=jax.jit(
            jax.vmap(lambda state: sequence.optimizer_moments_norm(state.train_state))
        ),
        run_chunk=jax.jit(_over_seeds(chunk_one, per_batch, mesh), donate_argnums=0),
        evaluate=jax.jit(evaluate_seeds),
    )


# ---------------------------------------------------------------------------------------------
# The host side: one `agents.driver.Loop`.


def per_iteration_flags(
    segment: Segment, block: int, window: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Whether diagnostics and the periodic intervention are due after each iteration of a
    window of ``block``: at multiples of their periods in the segment's frames, once learning
    has started (diagnostics also need an update, for the update ratios; an intervention due on
    the block's last iteration waits for its evaluation: `Segment.periodic_interventions`)."""
    config, step = segment.config, segment.frames_per_iteration
    diagnose = due_mask(window["frames_after"], step, config.diagnostics.every_frames)
    diagnose &= window["learning"] & (window["updates_after"] > 0)
    return {"diagnose": diagnose, "intervene": segment.periodic_interventions(block, window)}


_EXECUTABLES: dict[tuple, Any] = {}


def compiled_chunk(agent: MinAtarAgent, state: LoopState, game_index, plan, phase=None) -> Any:
    """``agent.run_chunk`` compiled for these shapes ahead of its first call, under ``phase`` (a
    context, the progress bar's 'compiling'), so that compile time is kept apart from running."""
    key = (agent.run_chunk, len(plan["updates"]), jax.tree.structure(state), len(state.rng))
    if key not in _EXECUTABLES:
        args, options = (state, game_index, plan), chunk_compiler_options(agent.config)
        with phase or contextlib.nullcontext():
            _EXECUTABLES[key] = runtime.compile_loop(agent.run_chunk, args, options)
    return _EXECUTABLES[key]


def chunk_compiler_options(config: ml_collections.ConfigDict) -> dict[str, str]:
    """The chunk's XLA options: ``run.cpu_products``, where only an MLP torso is dense layers."""
    return runtime.loop_compiler_options(config.run.cpu_products, config.network.torso == "mlp")


class MinAtarLoop:
    """The MinAtar trainer's part of `agents.driver.train_segments`: seed-batched compiled chunks.

    Rows per seed: 'train' every ``log_every_frames`` and at each chunk's end (episodes, mean
    return and length of the episodes ended since the last row, epsilon, importance exponent,
    frames/s and the learner's means), 'diagnostics' where due, 'intervention' where applied,
    'switch' at every game switch and 'eval' / 'eval_fresh' after every block.
    """

    matrix_keys = ("return_mean",)

    def __init__(self, segments: Sequence[Segment], seeds: np.ndarray):
        self.segments = list(segments)
        self.seeds = seeds
        self.games = tuple(distinct_games(segments[0].blocks))
        self.full_action_space = bool(segments[0].config.env.full_action_space)
        self.episodes = np.zeros(len(seeds), np.int64)
        self.last_returns: dict[str, float] = {}

    def agent(self, segment: Segment) -> MinAtarAgent:
        return make_agent(segment.config, self.games, self.full_action_space)

    def init(self, segment: Segment) -> LoopState:
        self.episodes = np.zeros(len(self.seeds), np.int64)
        self.last_returns = {}
        return self.agent(segment).init(self.seeds)

    def template(self, segment: Segment) -> Any:
        return jax.eval_shape(self.agent(segment).init, self.seeds)

    def restored(self, state: LoopState, metadata: dict[str, Any]) -> LoopState:
        self.episodes = np.asarray(metadata.get("episodes", self.episodes), np.int64)
        self.last_returns = dict(metadata.get("last_returns", {}))
        return self.agent(self.segments[0]).place(state)

    def metadata(self) -> dict[str, Any]:
        return {"episodes": [int(e) for e in self.episodes], "last_returns": self.last_returns}

    def start_block(self, run: Run, state, segment: Segment, block: int, resumed: bool):
        if resumed:  # the envs' state is part of the checkpoint: the episodes go on
            return state, []
        agent = self.agent(segment)
        policy = SwitchPolicy.from_config(segment.config.switch)
        game_index = np.int32(agent.suite.game_index(segment.blocks[block].game))
        settings = segment.config.intervention
        causes = segment.interventions_at_start(block)
        with run.phase("switching" if block else "starting"):
            state = agent.start_block(state, game_index, policy, len(causes))
        rows = []
        if block > 0:
            first = segment.plan.window(block, 0, 1)
            rate = float(
                optimizer_learning_rate(segment.config.optimizer, first["updates_before"][0])
            )
            norms = np.asarray(distributed.fetch(agent.moments_norm(state)))
            items = np.asarray(distributed.fetch(state.replay.size))
            for s, seed in enumerate(self.seeds):
                moments, size = float(norms[s]), int(items[s]) * segment.num_envs
                fields = switch_row_fields(segment, block, policy, rate, moments, size)
                rows.append(segment.row("switch", block, -1, seed, **fields))
                rows += [
                    segment.row("intervention", block, -1, seed, name=settings.name, cause=cause)
                    for cause in causes
                ]
        return state, rows

    def run_chunk(self, run: Run, state, segment: Segment, block: int, start: int, stop: int, log):
        # Host inputs stay NumPy arrays: in a multi-process job they are taken as the same
        # (replicated) value in every process.
        agent = self.agent(segment)
        window = segment.plan.window(block, start, stop)
        flags = per_iteration_flags(segment, block, window)
        plan = {
            **segment.schedule_values(window),
            "updates": window["updates"],
            "diagnose": flags["diagnose"],
            "intervene": flags["intervene"],
        }
        game = segment.blocks[block].game
        game_index = np.int32(agent.suite.game_index(game))
        run.show(
            game=f"{game} ({block + 1}/{len(segment.blocks)})",
            run=segment.name if segment.is_reference else None,
            status=None if window["learning"][-1] else "filling replay",
            last_return=shown_return(self.last_returns.get(game)),
        )
        executable = compiled_chunk(agent, state, game_index, plan, run.phase("compiling"))
        started = time.perf_counter()
        state, outputs = executable(state, game_index, plan)
        outputs = distributed.fetch(outputs)  # an all-gather when seeds span processes
        outputs = unpack_outputs(outputs, learner_scalars(segment.config))
        seconds = time.perf_counter() - started
        self._check_losses(run, segment, block, window, outputs)
        rows = self._rows(segment, block, start, window, flags, outputs, seconds)
        frames = (stop - start) * segment.frames_per_iteration
        if (latest := latest_return(rows)) is not None:
            self.last_returns[game] = latest
        log(rows)
        run.advance(
            frames,
            updates=int(window["updates"].sum()),
            last_return=shown_return(self.last_returns.get(game)),
        )
        return state, stop

    def _rows(self, segment, block, start, window, flags, outputs, seconds) -> list[dict]:
        """'train', 'diagnostics' and 'intervention' rows of a chunk, for every seed."""
        config, num = segment.config, len(window["updates"])
        log_at = due_mask(
            window["frames_after"], segment.frames_per_iteration, config.log_every_frames
        )
        log_at[-1] = True  # a row's window never spans a checkpoint
        ends = np.flatnonzero(log_at)
        values = segment.schedule_values(window)
        rate = num * segment.frames_per_iteration / max(seconds, 1e-9)
        rows = []
        for s, seed in enumerate(self.seeds):
            first = 0
            for end in ends:
                where = slice(first, end + 1)
                ended = outputs["ended"][s, where]
                returns = outputs["returns"][s, where][ended]
                lengths = outputs["lengths"][s, where][ended]
                self.episodes[s] += len(returns)
                updates = int(window["updates"][where].sum())
                learner = {
                    name: float(values[s, where].sum() / updates)
                    for name, values in outputs["learner"].items()
                    if updates > 0
                }
                rows.append(
                    segment.row(
                        "train",
                        block,
                        start + end,
                        seed,
                        episodes=int(self.episodes[s]),
                        episodes_since_last_row=len(returns),
                        return_mean=float(np.mean(returns)) if len(returns) else math.nan,
                        episode_length_mean=float(np.mean(lengths)) if len(lengths) else math.nan,
                        epsilon=float(values["epsilon"][end]),
                        **segment.importance_field(values, end),
                        frames_per_second=rate,
                        **learner,
                    )
                )
                first = end + 1
            for i in np.flatnonzero(flags["diagnose"]):
                measured = {k: float(v[s, i]) for k, v in outputs["diagnostics"].items()}
                rows.append(segment.row("diagnostics", block, start + i, seed, **measured))
            applied = start + np.flatnonzero(flags["intervene"])
            rows += segment.intervention_rows(block, applied, seed)
        return rows

    def _check_losses(self, run, segment, block, window, outputs) -> None:
        """`DivergenceError` at the first iteration whose learner loss or gradient norm (summed
        over its updates; the loss alone without ``learner.grad_norm``) is NaN/Inf, naming its
        last update."""
        found = divergence.first_nonfinite(outputs["learner"], ("loss", "grad_norm"))
        if found is None:
            return
        lane, offset = found.index
        frames = int(window["frames_after"][offset])
        where = f"{segment.name}, seed {int(self.seeds[lane])}, {segment.blocks[block].game}"
        raise divergence.DivergenceError(
            int(window["updates_after"][offset]),
            found.metric,
            found.value,
            f"{where}, frame {frames:,} of the segment",
            run.kept(),
        )

    def evaluate(self, run: Run, state, segment: Segment, block: int) -> list[dict[str, Any]]:
        """Every game seen so far after a sequence's block (a reference: its own game)."""
        agent = self.agent(segment)
        event = "eval_fresh" if segment.is_reference else "eval"
        last = segment.plan.iterations[block] - 1
        rows, params, extra = [], state.train_state.params, state.train_state.extra
        with run.phase("evaluating"):
            for cell in evaluation_cells(segment.blocks, block):
                index = agent.suite.game_index(cell.game)
                # Episodes depend on (block, game) only: a fresh reference meets the same episodes
                # as the sequence's evaluation after the same block (common random numbers).
                salt = np.uint32(block * 101 + index)
                started = time.perf_counter()
                with runtime.compiled_loop_lowering():  # its first call compiles the episode loop
                    evaluated = agent.evaluate(params, extra, np.int32(index), self.seeds, salt)
                returns, finished = distributed.fetch(evaluated)
                seconds = time.perf_counter() - started
                for s, seed in enumerate(self.seeds):
                    done = returns[s][finished[s]]
                    row = segment.row(event, block, last, seed)
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
        run.message(evaluation_message(segment, block, rows))
        return rows

    def params(self, state: LoopState) -> Any:
        return state.train_state.params

    def where(self, segment: Segment, block: int) -> str:
        seeds = [int(s) for s in self.seeds]
        return f"{segment.name}, seeds {seeds}, {segment.blocks[block].game}"

    def end_block(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------
# Training.


def make_blocks(config: ml_collections.ConfigDict) -> list[GameBlock]:
    """The schedule of a run: ``config.games`` x ``cycles``, ``frames_per_game`` each."""
    return make_schedule(
        config.games, config.frames_per_game, config.cycles, resolve=resolve_minatar_game
    )


def chunk_frames(config: ml_collections.ConfigDict) -> int:
    """Frames of one compiled chunk: ``checkpoint_every_frames``, at most one block."""
    return min(int(config.checkpoint_every_frames), int(config.frames_per_game))


def check_memory(
    config: ml_collections.ConfigDict, segments: Sequence[Segment], mesh: Mesh | None = None
) -> None:
    """One-line ValueError when the replays of the seeds that share one memory (a device's, or
    the host's for CPU devices: `runtime.runs_in_one_memory`) cannot fit in it."""
    games = tuple(distinct_games(segments[0].blocks))
    channels = max(CHANNELS[game] for game in games)
    shapes = jax.eval_shape(
        lambda: replay_init(
            replay_capacity(config),
            config.env.num_envs,
            (SCREEN, SCREEN, channels),
            stack_size=1,
            max_n_step=int(config.learner.n_step),
            frame_dtype=jnp.bool_,
        )
    )
    per_seed = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(shapes))
    seeds = int(config.num_seeds)
    shared = runtime.runs_in_one_memory(seeds, mesh)
    what = f"the replays of {seeds} seeds" + (f" ({shared} a device)" if shared < seeds else "")
    runtime.check_fits(per_seed * shared, what)


def plan_run(config: ml_collections.ConfigDict) -> list[Segment]:
    """The run's segments, after every check that needs no work dir: the config, the seed mesh,
    the learning plan and schedule, the memory. A one-line ValueError otherwise (the launcher
    plans every run of a launch before the first starts)."""
    validate_config(config, "minatar")
    check_torso_fits(config.network, (SCREEN, SCREEN))
    mesh = seed_mesh(config)  # a mesh that does not fit the devices or the seeds: one line
    segments = plan_segments(config, make_blocks(config))
    check_memory(config, segments, mesh)
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
) -> RunResult:
    """Trains ``config.num_seeds`` seeds through ``config.games`` (and the fresh references).

    ``workdir`` None runs without files; ``label`` names the run in the harness's lines (one of
    a launch's several). Bad settings raise a one-line ValueError before anything
    is written or built; a NaN/Inf learner loss or parameter raises
    `plasticity.divergence.DivergenceError` before that chunk's rows or checkpoint are written.
    The result's outputs: ``state`` (the sequence's final state, seed-batched, when this call
    finished it) and ``evaluations`` (the 'eval' and 'eval_fresh' rows of this call).
    """
    segments = plan_run(config)
    seeds = np.arange(config.num_seeds, dtype=np.int32) + int(config.seed)
    mesh = seed_mesh(config)
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
        defaults=configs.get_config(config.agent, "minatar").to_dict(),
        layout=f"mesh {mesh_lib.format_mesh(mesh)}" if mesh is not None else "one device",
    )
    with harness as run:
        return train_segments(run, segments, MinAtarLoop(segments, seeds), chunk_frames(config))
