"""Game sequences for continual RL: schedules, switch policies, learning plans, evaluation matrix.

Shared by the fully jitted MinAtar loop (`agents.minatar_loop`) and the host-driven Atari loop
(`agents.atari_loop`); nothing here knows which emulator runs the games.

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
  `plasticity.schedules.cosine_restarts`), which `plan_learning` computes ahead of the run.
* **Learning plan** (`plan_learning`): the replay ratio of DQN Zoo counted in frames (updates owed
  = ``floor(frames since learning started x updates_per_frame)``, learning starts once the replay
  holds ``learning_starts`` items and again after a flush), evaluated for every loop iteration of
  the whole run before it starts. Update counts are then known in advance: schedule boundaries,
  exact switch points and a static program for a jitted loop.
* **Evaluation matrix** (`evaluation_cells`, `visit_summary`, `evaluation_matrix_summary`): after
  each block, every game seen so far is evaluated; a cell records the block, the game evaluated,
  the game trained and how many times the evaluated game has been played. The score of a game right after its own block is a
  *visit score* (first visit, revisit, ...); `visit_summary` sets them next to the score of a
  freshly initialized network trained on that game alone for one block (the fresh reference), so
  forgetting (score on a game while others are trained) and loss of plasticity (a revisit that
  learns less than a fresh network) can be told apart.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from agents.replay import ReplayState, replay_end_episodes
from plasticity.train_state import TrainState, map_optimizer_moments

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
    ``total_updates`` the run's total. A block without updates gets no segment.
    """
    starts = sorted({int(u) for u in block_start_updates if 0 < int(u) < total_updates})
    if total_updates < 1:
        raise ValueError(
            "the learning-rate schedule cannot restart: the run does no learner update "
            "(lengthen the blocks or start learning earlier)"
        )
    config = ml_collections.ConfigDict(optimizer.to_dict())
    config.schedule.name = "cosine_restarts"
    config.schedule.boundaries = tuple(starts)
    config.schedule.total_steps = int(total_updates)
    return config


# ---------------------------------------------------------------------------------------------
# Learning plan.


class LearningPlan(NamedTuple):
    """When the learner updates, for every loop iteration of a run (arrays over iterations).

    An iteration adds ``items_per_iteration`` timesteps to the replay and advances
    ``frames_per_iteration`` frames; the learner then makes ``updates[i]`` updates.

    Attributes:
      updates: (T,) int32, learner updates made right after iteration i's environment step.
      learning_before: (T,) bool, whether the replay held enough items for learning *before*
        iteration i's add (epsilon-greedy exploration uses the begin value until then).
      learning_frames_before: (T,) int64, frames played since learning (last) started, before
        iteration i (epsilon and the importance exponent follow it).
      replay_items: (T,) int64, items in the replay after iteration i's add.
      updates_before: (T,) int64, learner updates made before iteration i.
      block_of_iteration: (T,) int32, the block each iteration belongs to.
      block_first_iteration: (num_blocks + 1,) int64, first iteration of each block (and the end).
      block_start_updates: (num_blocks,) int64, updates made before each block starts.
    """

    updates: np.ndarray
    learning_before: np.ndarray
    learning_frames_before: np.ndarray
    replay_items: np.ndarray
    updates_before: np.ndarray
    block_of_iteration: np.ndarray
    block_first_iteration: np.ndarray
    block_start_updates: np.ndarray

    @property
    def total_updates(self) -> int:
        return int(self.updates.sum())


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
    """The learning plan of a run of blocks of ``block_iterations`` loop iterations each.

    Mirrors the host-side counters of `agents.atari_loop`: after each add the replay holds
    ``min(items, capacity)`` items; once it holds ``learning_starts`` the frames of every iteration
    count as learning frames, and the updates owed are ``floor(learning_frames x
    updates_per_frame)`` minus those made. With ``flush_at_switch`` the replay restarts empty at
    every block after the first, and learning waits until it is refilled (learning frames keep
    counting from where they were).
    """
    if items_per_iteration < 1 or frames_per_iteration < 1:
        raise ValueError("items_per_iteration and frames_per_iteration must be >= 1")
    if not 0.0 < updates_per_frame <= 1.0:
        raise ValueError(f"updates_per_frame must be in (0, 1], got {updates_per_frame}")
    lengths = [int(n) for n in block_iterations]
    if not lengths or min(lengths) < 1:
        raise ValueError(f"every block needs at least one iteration, got {lengths}")
    updates, learning_before, learning_frames_before, items_after = [], [], [], []
    block_start_updates = []
    items, learning_frames, done_updates = 0, 0, 0
    for block, length in enumerate(lengths):
        if flush_at_switch and block > 0:
            items = 0
        block_start_updates.append(done_updates)
        step = np.arange(length, dtype=np.int64)
        items_before = np.minimum(items + step * items_per_iteration, capacity)
        items_now = np.minimum(items + (step + 1) * items_per_iteration, capacity)
        learning_now = items_now >= learning_starts
        frames_now = learning_frames + np.cumsum(learning_now) * frames_per_iteration
        frames_before = np.concatenate([[learning_frames], frames_now[:-1]])
        # Owed updates only grow while learning: frames_now stands still otherwise.
        owed = np.floor(frames_now * updates_per_frame + 1e-9).astype(np.int64)
        per_step = np.diff(np.concatenate([[done_updates], owed]))
        updates.append(per_step)
        learning_before.append(items_before >= learning_starts)
        learning_frames_before.append(frames_before)
        items_after.append(items_now)
        items, learning_frames, done_updates = (
            int(items_now[-1]),
            int(frames_now[-1]),
            int(owed[-1]),
        )
    updates_all = np.concatenate(updates).astype(np.int32)
    first = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return LearningPlan(
        updates=updates_all,
        learning_before=np.concatenate(learning_before),
        learning_frames_before=np.concatenate(learning_frames_before).astype(np.int64),
        replay_items=np.concatenate(items_after).astype(np.int64),
        updates_before=np.concatenate([[0], np.cumsum(updates_all)[:-1]]).astype(np.int64),
        block_of_iteration=np.repeat(np.arange(len(lengths), dtype=np.int32), lengths),
        block_first_iteration=first,
        block_start_updates=np.asarray(block_start_updates, np.int64),
    )


def linear_values(count: np.ndarray, begin: float, end: float, duration: float) -> np.ndarray:
    """``begin`` at count 0, linear to ``end`` at ``duration``, then held (vectorized)."""
    count = np.asarray(count, np.float64)
    if duration <= 0:
        return np.full(count.shape, end, np.float64)
    return begin + (end - begin) * np.clip(count / duration, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Evaluation matrix.


@dataclasses.dataclass(frozen=True)
class EvalCell:
    """One entry of the evaluation matrix: ``game`` evaluated after block ``block``.

    Attributes:
      block: index of the block just finished.
      trained_game: the game that block trained on.
      game: the game evaluated.
      visit: how many blocks of ``game`` have been played so far (its visit number).
      cycle: the cycle of the block just finished.
    """

    block: int
    trained_game: str
    game: str
    visit: int
    cycle: int

    @property
    def is_visit_end(self) -> bool:
        """The evaluated game is the one just trained: a first-visit or revisit score."""
        return self.game == self.trained_game


def evaluation_cells(blocks: Sequence[GameBlock], block_index: int) -> list[EvalCell]:
    """The cells to evaluate after block ``block_index``: every game seen so far, in order."""
    if not 0 <= block_index < len(blocks):
        raise ValueError(f"block {block_index} is outside a schedule of {len(blocks)} blocks")
    played = blocks[: block_index + 1]
    visits: dict[str, int] = {}
    for block in played:
        visits[block.game] = visits.get(block.game, 0) + 1
    current = blocks[block_index]
    return [
        EvalCell(
            block=block_index,
            trained_game=current.game,
            game=game,
            visit=visits[game],
            cycle=current.cycle,
        )
        for game in distinct_games(played)
    ]


def visit_summary(
    eval_rows: Iterable[Mapping[str, Any]],
    fresh_rows: Iterable[Mapping[str, Any]] = (),
    key: str = "return_mean",
) -> dict[str, dict[str, float]]:
    """{game: {'visit_1': ..., 'visit_2': ..., 'fresh': ...}}: seed means of ``key``.

    ``visit_k`` is the score on a game right after its k-th block (eval rows whose ``game`` equals
    their ``trained_game``); ``fresh`` the score of the fresh-network reference on that game.
    Non-finite or missing values are ignored.
    """
    cells: dict[str, dict[str, list[float]]] = {}

    def add(game: str, column: str, value: Any) -> None:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            cells.setdefault(game, {}).setdefault(column, []).append(float(value))

    for row in eval_rows:
        if row.get("game") is not None and row.get("game") == row.get("trained_game"):
            add(row["game"], f"visit_{int(row['visit'])}", row.get(key))
    for row in fresh_rows:
        if row.get("game") is not None:
            add(row["game"], "fresh", row.get(key))
    return {
        game: {column: float(np.mean(values)) for column, values in columns.items()}
        for game, columns in cells.items()
    }


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def evaluation_matrix_summary(
    blocks: Sequence[GameBlock],
    rows: Iterable[Mapping[str, Any]],
    keys: Sequence[str] = ("return_mean",),
) -> dict[str, Any]:
    """The evaluation matrix of a sequence from its metrics rows (JSON-ready, None where missing).

    The content of a work dir's ``evaluation_matrix.json``:

    * ``games``: the games in order of first appearance; ``blocks``: the schedule;
    * one [block][game] grid per name in ``keys`` (e.g. ``return_mean``): the seed mean of each
      game evaluated after each block (end-of-block 'eval' rows; None for games not seen yet or
      blocks not played);
    * ``fresh``: {game: {key: ..., 'frames': ...}} of the fresh-network references;
    * ``visit_scores`` (of the first key) and ``visit_scores_<key>`` (of the others): {game:
      {'visit_1', 'visit_2', ..., 'fresh'}} (`visit_summary`).
    """
    blocks = list(blocks)
    games = distinct_games(blocks)
    rows = list(rows)
    matrix_rows = [
        row
        for row in rows
        if row.get("event") == "eval" and row.get("end_of_block") and row.get("game") in games
    ]
    fresh_rows = [row for row in rows if row.get("event") == "eval_fresh"]
    summary: dict[str, Any] = {
        "games": games,
        "blocks": [dataclasses.asdict(block) for block in blocks],
    }
    for key in keys:
        cells: dict[tuple[int, int], list[float]] = {}
        for row in matrix_rows:
            position, value = int(row["block"]), _finite(row.get(key))
            if 0 <= position < len(blocks) and value is not None:
                cells.setdefault((position, games.index(row["game"])), []).append(value)
        summary[key] = [
            [float(np.mean(cells[(b, g)])) if (b, g) in cells else None for g in range(len(games))]
            for b in range(len(blocks))
        ]
    fresh: dict[str, dict[str, Any]] = {}
    for row in fresh_rows:
        entry = fresh.setdefault(
            row["game"], {"frames": row.get("frames"), **{k: [] for k in keys}}
        )
        for key in keys:
            value = _finite(row.get(key))
            if value is not None:
                entry[key].append(value)
    summary["fresh"] = {
        game: {
            **{key: float(np.mean(entry[key])) if entry[key] else None for key in keys},
            "frames": entry["frames"],
        }
        for game, entry in fresh.items()
    }
    for i, key in enumerate(keys):
        name = "visit_scores" if i == 0 else f"visit_scores_{key}"
        summary[name] = visit_summary(matrix_rows, fresh_rows, key)
    return summary
