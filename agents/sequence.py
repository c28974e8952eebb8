"""Game sequences for continual RL: names, schedules, switch policies, the learning plan, segments.

Shared by the fully jitted MinAtar loop (`agents.minatar_loop`) and the host-driven Atari loop
(`agents.atari_loop`); nothing here knows which emulator runs the games.

* **Game names** (`resolve_game_name`): the one resolver of every suite; a user's spelling
  ('Pong', 'ALE/Pong-v5', 'Breakout-MinAtar', 'space invaders') becomes the suite's canonical
  name, and an unknown one is a one-line error listing close matches.
* **Schedule** (`make_schedule`): a list of games played ``cycles`` times, each block
  ``frames_per_game`` frames long, as `GameBlock`s that carry their index, cycle and visit number
  (1 the first time a game is played, 2 the second, ...).
* **Switch policies** (`SwitchPolicy`, `apply_switch_policy`): pure functions of the learner's
  `TrainState` and the `ReplayState`, applied between two blocks. The episodes in flight are always
  cut (`replay_end_episodes`: no n-step return spans two games); then, as configured, the replay
  is flushed (`flush_replay`), the optimizer's moments are reset (`reset_optimizer_moments`;
  the learning-rate schedule's count, NaP's reference norms and L2-init's anchor survive) and the
  learning rate restarts its schedule. The restart is not a state change: the optimizer is built
  with a cosine schedule restarted at the update counts where blocks start
  (`restarted_schedule_config`, NaP's sequential-ALE schedule via
  `plasticity.schedules.cosine_restarts`), which the learning plan knows ahead of the run.
* **Learning plan** (`plan_learning`, `LearningPlan.window`): the replay ratio of DQN Zoo counted in
  frames, in closed form per block, so update counts, exploration and periodic events of any
  stretch of the run are known before it runs: schedule boundaries, exact switch points and a
  static program for a jitted loop. The one plan of both loops.
* **Segments** (`plan_segments`): the sequence and its fresh-network references (one network per
  game, trained on it alone for one block; the first game's is the sequence's own first block),
  each with its own plan and config; the one reference design of both loops. The evaluation
  matrix lives in `agents.evaluation_matrix`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from agents import configs as agent_configs
from agents.replay import ReplayState, replay_end_episodes
from plasticity import optim
from plasticity.run import due_mask
from plasticity.train_state import TrainState, map_optimizer_moments

# ---------------------------------------------------------------------------------------------
# Game names.

_GYM_PREFIX = re.compile(r"^ale/", re.IGNORECASE)
_GYM_SUFFIX = re.compile(r"(-ram)?(noframeskip|deterministic)?(-v\d+)?$", re.IGNORECASE)
_MINATAR = re.compile(r"[-_ ]?minatar", re.IGNORECASE)


def game_key(name: str) -> str:
    """A game name in any common spelling reduced to a lookup key.

    'ALE/MontezumaRevenge-v5', 'MontezumaRevengeNoFrameskip-v4', 'montezuma_revenge' and
    'Montezuma Revenge' all map to 'montezumarevenge'; 'SpaceInvaders-MinAtar' and
    'space_invaders' to 'spaceinvaders'.
    """
    if not isinstance(name, str):
        raise ValueError(f"a game name must be a string, got {type(name).__name__}: {name!r}")
    stripped = _MINATAR.sub("", _GYM_SUFFIX.sub("", _GYM_PREFIX.sub("", name.strip())))
    stripped = _GYM_SUFFIX.sub("", stripped)
    return re.sub(r"[^0-9a-z]", "", stripped.lower())


def resolve_game_name(name: str, known: Sequence[str], suite: str) -> str:
    """The name in ``known`` that ``name`` spells (`game_key`), or a one-line ValueError naming
    the ``suite`` and close matches (so that a typo such as 'Pongg' says 'pong')."""
    by_key = {game_key(game): game for game in known}
    key = game_key(name)
    if key in by_key:
        return by_key[key]
    close = difflib.get_close_matches(key, list(by_key), n=5, cutoff=0.6)
    suggestion = ", ".join(by_key[k] for k in close) if close else "none"
    raise ValueError(f"unknown {suite} game {name!r}; close matches: {suggestion}")


# ---------------------------------------------------------------------------------------------
# Schedules.


@dataclasses.dataclass(frozen=True)
class GameBlock:
    """One stretch of training on one game.

    Attributes:
      game: canonical game name.
      frames: training frames of this block (the emulator's unit: agent steps x frame skip).
      visit: 1 the first time the schedule plays this game, 2 the second time, ...
      index: position of the block in the schedule (0-based).
      cycle: which pass over the list of games this block belongs to (1-based).
    """

    game: str
    frames: int
    visit: int = 1
    index: int = 0
    cycle: int = 1


def make_schedule(
    games: Sequence[str],
    frames_per_game: int,
    cycles: int = 1,
    resolve: Callable[[str], str] | None = None,
) -> list[GameBlock]:
    """Blocks of ``frames_per_game`` frames for ``games`` in order, played ``cycles`` times.

    ``resolve`` maps a user's spelling to the canonical name (and raises a one-line ValueError for
    an unknown game); by default names are kept as given.
    """
    games = list(games)
    if not games:
        raise ValueError("at least one game is needed")
    if cycles < 1:
        raise ValueError(f"cycles must be >= 1, got {cycles}")
    if frames_per_game < 1:
        raise ValueError(f"frames per game must be >= 1, got {frames_per_game}")
    canonical = [resolve(game) if resolve is not None else game for game in games]
    visits: dict[str, int] = {}
    blocks = []
    for cycle in range(1, cycles + 1):
        for game in canonical:
            visits[game] = visits.get(game, 0) + 1
            blocks.append(
                GameBlock(
                    game=game,
                    frames=int(frames_per_game),
                    visit=visits[game],
                    index=len(blocks),
                    cycle=cycle,
                )
            )
    return blocks


def distinct_games(blocks: Sequence[GameBlock]) -> list[str]:
    """The games of a schedule in order of first appearance."""
    return list(dict.fromkeys(block.game for block in blocks))


# ---------------------------------------------------------------------------------------------
# Switch policies.


@dataclasses.dataclass(frozen=True)
class SwitchPolicy:
    """What happens to the learner's state when the schedule switches to the next game.

    The paper's choices are not stated (docs/algorithms.md, "Sequential Atari protocol"),
    hence three independent switches.

    Attributes:
      flush_replay: empty the replay, so the next game is learned from its own data only.
      reset_optimizer: zero the optimizer's moments (Adam's mu/nu and its bias-correction count,
        RMSProp's averages, momentum traces).
      restart_schedule: restart the learning-rate schedule (warm-up + cosine) at every switch.
    """

    flush_replay: bool = False
    reset_optimizer: bool = False
    restart_schedule: bool = False

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "SwitchPolicy":
        """From a config section with the three fields (missing ones are False)."""
        return cls(**{field.name: bool(config.get(field.name, False)) for field in _fields(cls)})


def _fields(cls) -> tuple[dataclasses.Field, ...]:
    return dataclasses.fields(cls)


def flush_replay(replay: ReplayState) -> ReplayState:
    """An empty replay with the same sizes; the running max priority is kept.

    Keeping the max priority keeps new items on the scale of the priorities the learner has been
    producing (a fresh buffer would start again from 1).
    """
    empty = jax.tree.map(jnp.zeros_like, replay)
    return empty.replace(max_priority=replay.max_priority)


def _is_moment_state(node: Any) -> bool:
    """An optax state (a NamedTuple) holding moments (mu / nu / trace) that a reset clears."""
    fields = getattr(node, "_fields", ())
    return isinstance(node, tuple) and any(name in fields for name in ("mu", "nu", "trace"))


def reset_optimizer_moments(train_state: TrainState) -> TrainState:
    """Zeroes every optimizer moment and the count of the optimizer that owns moments.

    Adam's (mu, nu, count) restart as at initialization, so the bias correction of the first
    steps applies again; RMSProp's averages and momentum traces are zeroed. Everything else in
    the optimizer state is kept: the learning-rate schedule's count (the schedule is global,
    see `restarted_schedule_config`), NaP's reference norms and L2-init's anchor.
    """
    opt_state = map_optimizer_moments(
        train_state.opt_state,
        train_state.params,
        lambda moment: jax.tree.map(jnp.zeros_like, moment),
    )

    def reset_count(node: Any) -> Any:
        if _is_moment_state(node) and "count" in node._fields:
            return node._replace(count=jnp.zeros_like(node.count))
        return node

    opt_state = jax.tree.map(reset_count, opt_state, is_leaf=_is_moment_state)
    return train_state.replace(opt_state=opt_state)


def apply_switch_policy(
    train_state: TrainState, replay: ReplayState, policy: SwitchPolicy
) -> tuple[TrainState, ReplayState]:
    """The learner and replay after a game switch under ``policy`` (pure; jit with it static).

    The episodes in flight always end at their newest stored timestep (as at a truncation, so
    n-step returns never span two games); then the replay is flushed and the optimizer's moments
    reset when the policy says so. The schedule restart lives in the optimizer itself.
    """
    replay = replay_end_episodes(replay)
    if policy.flush_replay:
        replay = flush_replay(replay)
    if policy.reset_optimizer:
        train_state = reset_optimizer_moments(train_state)
    return train_state, replay


def restarted_schedule_config(
    optimizer: ml_collections.ConfigDict, block_start_updates: Sequence[int], total_updates: int
) -> ml_collections.ConfigDict:
    """``optimizer`` with a warm-up + cosine schedule restarted at every block start.

    Each block's segment warms up from ``schedule.init_value`` to ``learning_rate`` over
    ``schedule.warmup_steps`` updates, then decays by a cosine to ``schedule.end_value`` at the
    block's end (NaP's sequential-ALE schedule: 1e-8 -> peak after 1,000 updates -> 1e-6).
    ``block_start_updates`` are the update counts at which blocks start (`LearningPlan`);
    ``total_updates`` the run's total. A block without updates gets no segment; one whose updates
    do not outlast the warm-up is a one-line ValueError, as its rate would never reach the peak.
    """
    starts = sorted({int(u) for u in block_start_updates if 0 < int(u) < total_updates})
    if total_updates < 1:
        raise ValueError(
            "the learning-rate schedule cannot restart: the run does no learner update "
            "(lengthen the blocks or start learning earlier)"
        )
    bounds = [0, *starts, int(total_updates)]
    shortest = min(end - start for start, end in zip(bounds, bounds[1:]))
    warmup = int(optimizer.schedule.warmup_steps)
    if shortest <= warmup:
        raise ValueError(
            f"the restarted learning-rate schedule needs blocks of more than "
            f"optimizer.schedule.warmup_steps={warmup:,} updates, but one block makes "
            f"{shortest:,}: its rate would never reach the peak (lower warmup_steps or lengthen "
            "frames_per_game)"
        )
    config = ml_collections.ConfigDict(optimizer.to_dict())
    config.schedule.name = "cosine_restarts"
    config.schedule.boundaries = tuple(starts)
    config.schedule.total_steps = int(total_updates)
    return config


# ---------------------------------------------------------------------------------------------
# Learning plan: the replay ratio, computed ahead of the run.


@dataclasses.dataclass(frozen=True)
class LearningPlan:
    """When the learner updates, for every loop iteration of a run, in closed form per block.

    A loop iteration adds ``items_per_iteration`` timesteps to the replay (one per env) and
    advances ``frames_per_iteration`` frames; the learner then makes the updates owed: DQN Zoo's
    replay ratio counted in frames, ``floor(learning frames x updates_per_frame)`` minus the
    updates made, where learning frames are the frames played since the replay first held
    ``learning_starts`` items (and again since it was refilled after a flush). Both loops (the
    compiled MinAtar loop and the host-driven Atari loop) read their updates, exploration and
    periodic events from here, so they follow one plan; `window` gives per-iteration arrays for
    any stretch of a block without materializing the whole run (12.5M iterations at paper scale).

    Attributes: the plan's settings, then per block: ``iterations``, replay items at its start
    (``items_start``), learning frames before it (``learning_frames_start``), its first learning
    iteration (``first_learning``; ``iterations`` when it never learns) and the updates made
    before it (``block_start_updates``); ``total_updates``.
    """

    items_per_iteration: int
    frames_per_iteration: int
    learning_starts: int
    capacity: int
    updates_per_frame: float
    iterations: tuple[int, ...]
    items_start: tuple[int, ...]
    learning_frames_start: tuple[int, ...]
    first_learning: tuple[int, ...]
    block_start_updates: tuple[int, ...]
    total_updates: int

    def owed(self, learning_frames: np.ndarray | int) -> np.ndarray:
        """Updates owed after ``learning_frames`` learning frames (the replay ratio)."""
        frames = np.asarray(learning_frames, np.float64)
        return np.floor(frames * self.updates_per_frame + 1e-9).astype(np.int64)

    @property
    def total_learning_frames(self) -> int:
        """Learning frames of the whole run (those after its last block's last iteration)."""
        last = len(self.iterations) - 1
        steps = max(0, self.iterations[last] - self.first_learning[last])
        return int(self.learning_frames_start[last] + steps * self.frames_per_iteration)

    @property
    def block_first_iteration(self) -> np.ndarray:
        """(blocks + 1,) first iteration of each block in the run, and the run's end."""
        return np.concatenate([[0], np.cumsum(self.iterations)]).astype(np.int64)

    def window(self, block: int, start: int, stop: int) -> dict[str, np.ndarray]:
        """Per-iteration values of iterations [start, stop) of ``block`` (block-relative).

        Keys: ``updates`` (made right after the iteration's env step), ``updates_before`` and
        ``updates_after`` (made in the run before / after it), ``replay_items`` (after its add),
        ``learning`` (the replay holds enough items after its add), ``learning_before`` (before
        it: exploration stays at its begin value until then), ``learning_frames_before`` and
        ``learning_frames_after`` (exploration and the importance exponent follow them) and
        ``frames_after`` (frames of the run after the iteration).
        """
        if not 0 <= start <= stop <= self.iterations[block]:
            raise ValueError(f"iterations [{start}, {stop}) outside block {block}")
        step = np.arange(start, stop, dtype=np.int64)
        items = self.items_start[block]
        first = self.first_learning[block]
        lf_start = self.learning_frames_start[block]
        fpi, ipi = self.frames_per_iteration, self.items_per_iteration
        learning_after = lf_start + np.maximum(0, step - first + 1) * fpi
        learning_before = lf_start + np.maximum(0, step - first) * fpi
        updates_after = self.owed(learning_after)
        updates_before = self.owed(learning_before)
        return {
            "updates": (updates_after - updates_before).astype(np.int32),
            "updates_before": updates_before,
            "updates_after": updates_after,
            "replay_items": np.minimum(items + (step + 1) * ipi, self.capacity),
            "learning": step >= first,
            "learning_before": np.minimum(items + step * ipi, self.capacity)
            >= self.learning_starts,
            "learning_frames_before": learning_before,
            "learning_frames_after": learning_after,
            "frames_after": (self.block_first_iteration[block] + step + 1) * fpi,
        }


def max_updates_per_iteration(frames_per_iteration: int, updates_per_frame: float) -> int:
    """``ceil(frames_per_iteration x updates_per_frame)``: owed updates are the floor of a running
    product (`LearningPlan.owed`), so no iteration owes more."""
    return max(1, math.ceil(frames_per_iteration * updates_per_frame - 1e-9))


def plan_learning(
    block_iterations: Sequence[int],
    *,
    items_per_iteration: int,
    frames_per_iteration: int,
    learning_starts: int,
    capacity: int,
    updates_per_frame: float,
    flush_at_switch: bool = False,
) -> LearningPlan:
    """The `LearningPlan` of a run of blocks of ``block_iterations`` loop iterations each.

    After each add the replay holds ``min(items, capacity)`` items; once it holds
    ``learning_starts`` every iteration's frames count as learning frames. With
    ``flush_at_switch`` the replay restarts empty at every block after the first, and learning
    waits until it is refilled (learning frames keep counting from where they were). A replay
    too small to ever hold ``learning_starts`` items never learns (`check_learning_reachable`
    turns that into an error before a run starts).
    """
    if items_per_iteration < 1 or frames_per_iteration < 1:
        raise ValueError("items_per_iteration and frames_per_iteration must be >= 1")
    if not 0.0 < updates_per_frame <= 1.0:
        raise ValueError(f"updates_per_frame must be in (0, 1], got {updates_per_frame}")
    lengths = tuple(int(n) for n in block_iterations)
    if not lengths or min(lengths) < 1:
        raise ValueError(f"every block needs at least one iteration, got {list(lengths)}")
    items, learning_frames = 0, 0
    items_start, frames_start, first_learning, start_updates = [], [], [], []
    owed = lambda frames: int(math.floor(frames * updates_per_frame + 1e-9))  # noqa: E731
    for block, length in enumerate(lengths):
        if flush_at_switch and block > 0:
            items = 0
        items_start.append(items)
        frames_start.append(learning_frames)
        start_updates.append(owed(learning_frames))
        if capacity < learning_starts:
            first = length
        elif items >= learning_starts:
            first = 0
        else:  # the first i with items + (i + 1) x items_per_iteration >= learning_starts
            first = min(length, -(-(learning_starts - items) // items_per_iteration) - 1)
        first_learning.append(first)
        learning_frames += (length - first) * frames_per_iteration
        items = min(items + length * items_per_iteration, capacity)
    return LearningPlan(
        items_per_iteration=int(items_per_iteration),
        frames_per_iteration=int(frames_per_iteration),
        learning_starts=int(learning_starts),
        capacity=int(capacity),
        updates_per_frame=float(updates_per_frame),
        iterations=lengths,
        items_start=tuple(items_start),
        learning_frames_start=tuple(frames_start),
        first_learning=tuple(first_learning),
        block_start_updates=tuple(start_updates),
        total_updates=owed(learning_frames),
    )


# The learner counts its updates in int32 (`plasticity.train_state.TrainState.step`).
MAX_UPDATES = 2**31 - 1


def check_learning_reachable(plan: LearningPlan) -> None:
    """One-line ValueError when the learner would never update, or would count more updates than
    its int32 step holds (about 34 billion frames at DQN's rate; before anything is built)."""
    if plan.total_updates > MAX_UPDATES:
        raise ValueError(
            f"the sequence plans {plan.total_updates:,} learner updates, more than the learner's "
            f"int32 step counts ({MAX_UPDATES:,}); lower frames_per_game, cycles or "
            "updates_per_frame, or split the sequence into runs"
        )
    if plan.total_updates > 0:
        return
    if plan.capacity < plan.learning_starts:
        raise ValueError(
            f"learning never starts: the replay holds at most {plan.capacity:,} transitions but "
            f"learning starts at {plan.learning_starts:,} (raise replay.capacity or lower "
            "replay.min_fill_fraction)"
        )
    needed = -(-plan.learning_starts // plan.items_per_iteration) * plan.frames_per_iteration
    raise ValueError(
        f"learning never starts: no game block is long enough to fill the replay to "
        f"{plan.learning_starts:,} transitions ({needed:,} frames); lengthen frames_per_game or "
        "lower replay.min_fill_fraction"
    )


def linear_values(count: np.ndarray, begin: float, end: float, duration: float) -> np.ndarray:
    """``begin`` at count 0, linear to ``end`` at ``duration``, then held (vectorized)."""
    count = np.asarray(count, np.float64)
    if duration <= 0:
        return np.full(count.shape, end, np.float64)
    return begin + (end - begin) * np.clip(count / duration, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Segments: the sequence and its fresh-network references.

SEQUENCE = "sequence"
FRESH_PREFIX = "fresh_"
# A periodic intervention applied more often in a block gets one row a chunk, not one per
# application (noisy updates after every iteration would write millions of rows a game).
MAX_INTERVENTION_ROWS_PER_BLOCK = 16


@dataclasses.dataclass
class Segment:
    """One independent run inside a training call: the sequence, or a fresh-network reference.

    Every segment starts from the seeds' initial networks (common random numbers) and plays its
    blocks with its own learning plan and config (its optimizer schedule restarted at its own
    block starts). A reference (``fresh_<game>``) trains a new network on one game for one block:
    the score a revisit is compared with. It shares the sequence's optimizer (with a restarted
    schedule, its updates run exactly the sequence's first block's segment of it), action set
    and importance-exponent anneal, so every reference reuses the sequence's compiled programs,
    and the first game's reference would replay the sequence's first block exactly: it is not
    trained again, the sequence's evaluation after its first block is that reference's score
    (``first_block_is_reference``, `first_block_reference_rows`).
    """

    name: str
    blocks: list[GameBlock]
    plan: LearningPlan
    config: ml_collections.ConfigDict
    first_block_is_reference: bool = False

    @property
    def is_reference(self) -> bool:
        return self.name != SEQUENCE

    @property
    def frames_per_iteration(self) -> int:
        return self.plan.frames_per_iteration

    @property
    def num_envs(self) -> int:
        return self.plan.items_per_iteration

    @property
    def total_frames(self) -> int:
        return sum(block.frames for block in self.blocks)

    def frames_before(self, block: int) -> int:
        """Frames of the segment before ``block`` starts."""
        return sum(b.frames for b in self.blocks[:block])

    def _intervention_due(self, window: Mapping[str, np.ndarray]) -> np.ndarray:
        """The periodic intervention's multiples of ``every_frames`` in a window, once learning
        has updated the network (none without an intervention)."""
        settings = self.config.intervention
        every = int(settings.every_frames) if settings.name != "none" else 0
        due = due_mask(window["frames_after"], self.frames_per_iteration, every)
        return due & window["learning"] & (window["updates_after"] > 0)

    @property
    def summarizes_interventions(self) -> bool:
        """Whether the periodic intervention can apply more than MAX_INTERVENTION_ROWS_PER_BLOCK
        times in a block (at most once an iteration): then a chunk's applications get one row
        (`intervention_rows`), e.g. noisy updates after every iteration's updates."""
        settings = self.config.intervention
        every = int(settings.every_frames) if settings.name != "none" else 0
        if every <= 0:
            return False
        period = max(every, self.frames_per_iteration)
        return max(b.frames for b in self.blocks) / period > MAX_INTERVENTION_ROWS_PER_BLOCK

    def intervention_rows(self, block: int, applied: Sequence[int], seed: int) -> list[dict]:
        """'intervention' rows of the periodic applications after block-relative iterations
        ``applied`` (one chunk's): a row each, or with `summarizes_interventions` one row at the
        last, with ``applications``, ``every_frames`` and ``first_frames`` (the first's frames).
        """
        name = self.config.intervention.name
        if not len(applied):
            return []
        if not self.summarizes_interventions:
            return [
                self.row("intervention", block, int(i), seed, name=name, cause="periodic")
                for i in applied
            ]
        first = self.row("intervention", block, int(applied[0]), seed)["frames"]
        summary = dict(
            applications=len(applied),
            every_frames=int(self.config.intervention.every_frames),
            first_frames=first,
        )
        return [
            self.row(
                "intervention",
                block,
                int(applied[-1]),
                seed,
                name=name,
                **summary,
                cause="periodic",
            )
        ]

    def periodic_interventions(self, block: int, window: Mapping[str, np.ndarray]) -> np.ndarray:
        """Whether the periodic intervention runs after each iteration of ``window`` (of
        ``block``): when due, except on the block's last iteration, where it waits until the
        block's evaluation has scored the trained network (`interventions_at_start`)."""
        end = int(self.plan.block_first_iteration[block + 1]) * self.frames_per_iteration
        return self._intervention_due(window) & (window["frames_after"] != end)

    def interventions_at_start(self, block: int) -> tuple[str, ...]:
        """The causes of the interventions at ``block``'s start, before the switch policy (on the
        replay of the game that ended), their rows' ``cause``: 'at_switch' for
        ``intervention.at_switch``, 'periodic' for a periodic one that fell on the previous
        block's last iteration; none for the first block."""
        settings = self.config.intervention
        if block == 0 or settings.name == "none":
            return ()
        n = self.plan.iterations[block - 1]
        deferred = n > 0 and bool(self._intervention_due(self.plan.window(block - 1, n - 1, n))[0])
        return ("at_switch",) * bool(settings.at_switch) + ("periodic",) * deferred

    def chunk_ends(self, block: int, chunk_frames: int) -> list[int]:
        """Block-relative iteration counts at which the chunks of ``block`` end: every
        ``chunk_frames`` frames of the block, and its end."""
        length = self.plan.iterations[block]
        per_chunk = max(1, chunk_frames // self.frames_per_iteration)
        return sorted({*range(per_chunk, length, per_chunk), length})

    def schedule_values(self, window: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Exploration epsilon (before each iteration's step) and importance exponent (for its
        updates) of a `LearningPlan.window`, from the segment's config."""
        exploration, replay = self.config.exploration, self.config.replay
        epsilon = np.where(
            window["learning_before"],
            linear_values(
                window["learning_frames_before"],
                exploration.epsilon_begin,
                exploration.epsilon_end,
                exploration.decay_frames,
            ),
            exploration.epsilon_begin,
        )
        beta = linear_values(
            window["learning_frames_after"],
            replay.importance_exponent_begin,
            replay.importance_exponent_end,
            replay.importance_exponent_anneal_frames,
        )
        return {
            "epsilon": epsilon.astype(np.float32),
            "importance_exponent": beta.astype(np.float32),
        }

    def importance_field(self, values: Mapping[str, np.ndarray], i: int) -> dict[str, float]:
        """A 'train' row's ``importance_exponent`` (``schedule_values``' at ``i``): only where the
        replay is prioritized, since a uniform one's weights are 1 whatever it says."""
        if not self.config.replay.prioritized:
            return {}
        return {"importance_exponent": float(values["importance_exponent"][i])}

    def row(self, event: str, block: int, iteration: int, seed: int, **fields) -> dict[str, Any]:
        """The fields every metrics row carries, at the end of block-relative ``iteration`` of
        ``block`` (-1: the block's start): frames, agent steps and updates of the segment, the
        block's game, index, visit and cycle, and the seed."""
        done = self.plan.block_first_iteration[block] + iteration + 1
        frames = int(done * self.frames_per_iteration)
        updates = int(self.plan.owed(self._learning_frames(block, iteration)))
        info = self.blocks[block]
        return {
            "event": event,
            "step": updates,
            "frames": frames,
            "agent_steps": frames * self.num_envs // self.frames_per_iteration,
            "updates": updates,
            "game": info.game,
            "block": info.index,
            "visit": info.visit,
            "cycle": info.cycle,
            "seed": int(seed),
            **fields,
        }

    def _learning_frames(self, block: int, iteration: int) -> int:
        first = self.plan.first_learning[block]
        steps = max(0, iteration - first + 1)
        return self.plan.learning_frames_start[block] + steps * self.frames_per_iteration


def learning_settings(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """`plan_learning`'s settings of an agent config: replay sizes, replay ratio and the frames
    and transitions of one loop iteration (one step of every env)."""
    num_envs = int(config.env.num_envs)
    return dict(
        items_per_iteration=num_envs,
        frames_per_iteration=num_envs * int(config.env.frame_skip),
        learning_starts=agent_configs.learning_starts(config),
        capacity=agent_configs.replay_capacity(config),
        updates_per_frame=float(config.updates_per_frame),
    )


def plan_segments(config: ml_collections.ConfigDict, blocks: Sequence[GameBlock]) -> list[Segment]:
    """The sequence ``blocks`` and, with ``evaluation.fresh_reference``, one reference per game
    after the first (whose reference is the sequence's first block).

    Raises a one-line ValueError when the learner would never update or the schedule cannot be
    built. The segments' configs make explicit what they share: the action set (the full set
    when several games are played), the importance-exponent anneal (the sequence's learning
    frames when it is 0, so that it ends with the sequence) and the learning-rate schedule
    (restarted at every game, or fitted to the sequence's updates where the config leaves it
    open: `plasticity.optim.fit_open_schedule`).
    """
    settings = learning_settings(config)
    policy = SwitchPolicy.from_config(config.switch)
    fpi = settings["frames_per_iteration"]
    plan = plan_learning(
        [block.frames // fpi for block in blocks], flush_at_switch=policy.flush_replay, **settings
    )
    check_learning_reachable(plan)
    shared = ml_collections.ConfigDict(config.to_dict())
    if shared.env.full_action_space is None:
        shared.env.full_action_space = len(distinct_games(blocks)) > 1
    if not shared.replay.importance_exponent_anneal_frames:  # ends with the learning, as DQN Zoo's
        shared.replay.importance_exponent_anneal_frames = max(1, plan.total_learning_frames)
    if policy.restart_schedule:
        shared.optimizer = restarted_schedule_config(
            config.optimizer, plan.block_start_updates, plan.total_updates
        )
    else:  # a schedule left open spans the sequence's updates (cosine_restarts: at every game)
        shared.optimizer = optim.fit_open_schedule(
            config.optimizer, plan.total_updates, plan.block_start_updates
        )
    optim.check_schedule_builds(shared.optimizer)
    fresh_reference = bool(config.evaluation.fresh_reference)
    main = Segment(SEQUENCE, list(blocks), plan, shared, fresh_reference)
    if not fresh_reference:
        return [main]
    # The first game's reference is the sequence's first block (`Segment`).
    return [main, *(reference_segment(main, game) for game in distinct_games(blocks)[1:])]


def reference_segment(main: Segment, game: str) -> Segment:
    """The fresh-network reference of ``game``: a new network trained on it alone for one block
    as long as the game's first block in ``main``, with ``main``'s config but no switch policy."""
    config = ml_collections.ConfigDict(main.config.to_dict())
    config.switch = ml_collections.ConfigDict(dataclasses.asdict(SwitchPolicy()))
    block = GameBlock(game=game, frames=next(b.frames for b in main.blocks if b.game == game))
    settings = learning_settings(config)
    plan = plan_learning([block.frames // settings["frames_per_iteration"]], **settings)
    return Segment(f"{FRESH_PREFIX}{game}", [block], plan, config)


def evaluation_scores(rows: Sequence[Mapping[str, Any]]) -> str:
    """'breakout 4.12, asterix 1.25 (0.004 human-normalized)': each game's mean return over the
    rows (seeds) and their episodes, with its human-normalized score where rows carry one."""
    returns: dict[str, list[float]] = {}
    normalized: dict[str, list[float]] = {}
    for row in rows:
        for key, into in (("return_mean", returns), ("human_normalized", normalized)):
            value = row.get(key)
            if value is not None and math.isfinite(value):
                into.setdefault(row["game"], []).append(value)
    scores = []
    for game, values in returns.items():
        score = f"{game} {np.mean(values):.2f}"
        if normalized.get(game):
            score += f" ({np.mean(normalized[game]):.3f} human-normalized)"
        scores.append(score)
    return ", ".join(scores) or "no episode ended"


def evaluation_message(segment: Segment, block: int, rows: list[dict[str, Any]]) -> str:
    """'eval after block 2 (breakout, visit 2) at 61,440 frames: breakout 4.12, asterix 1.25':
    the line above the progress bar when a block's evaluation is done (Atari and MinAtar); the
    block is counted from 0, as the rows' ``block`` field and the evaluation matrix count it."""
    info = segment.blocks[block]
    where = "fresh network" if segment.is_reference else f"block {info.index}"
    at = f" at {int(rows[0]['frames']):,} frames" if rows and "frames" in rows[0] else ""
    return f"eval after {where} ({info.game}, visit {info.visit}){at}: {evaluation_scores(rows)}"


def first_block_reference_rows(
    segment: Segment, block: int, rows: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The first game's fresh-reference rows ('eval_fresh'), when ``rows`` are the sequence's
    evaluation after ``block`` and that block is the reference (`Segment`): its own game's rows,
    marked ``from_sequence_block`` 0. Empty otherwise."""
    if not (segment.first_block_is_reference and block == 0):
        return []
    game = segment.blocks[0].game
    return [
        {**row, "event": "eval_fresh", "from_sequence_block": 0}
        for row in rows
        if row.get("event") == "eval" and row.get("game") == game
    ]


def optimizer_moments_norm(train_state: TrainState) -> jax.Array:
    """Global norm of the optimizer's moments (Adam's mu and nu, RMSProp's averages, momentum
    traces): 0 right after a switch that resets them ('switch' rows record it)."""
    squares = []
    map_optimizer_moments(
        train_state.opt_state,
        train_state.params,
        lambda tree: squares.extend(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)),
    )
    return jnp.sqrt(sum(squares, jnp.zeros([], jnp.float32)))


def switch_row_fields(
    segment: Segment,
    block: int,
    policy: SwitchPolicy,
    learning_rate: float,
    moments: float,
    replay_items: int,
) -> dict[str, Any]:
    """The fields a 'switch' row adds to `Segment.row` at the start of ``block``: the previous
    game, the policy, and what the learner looks like after the switch: the next update's
    learning rate, the items in the replay and the optimizer moments' norm."""
    return {
        "previous_game": segment.blocks[block - 1].game,
        "learning_rate": learning_rate,
        "replay_items": int(replay_items),
        "optimizer_moments_norm": moments,
        **dataclasses.asdict(policy),
    }
