"""The evaluation matrix of a game sequence: which games are evaluated after each block, and the
``evaluation_matrix.json`` summary both RL loops write.

After each block, every game seen so far is evaluated; a cell records the block, the game
evaluated, the game trained and how many times the evaluated game has been played. The score of
a game right after its own block is a *visit score* (first visit, revisit, ...); `visit_summary`
sets them next to the score of a freshly initialized network trained on that game alone for one
block (the fresh reference, `agents.sequence.plan_segments`), so forgetting (a game's score while
others are trained) and loss of plasticity (a revisit that learns less than a fresh network) can
be told apart.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from agents.sequence import GameBlock, distinct_games

EVALUATION_MATRIX_FILE = "evaluation_matrix.json"


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


def write_evaluation_matrix(
    workdir: str | Path,
    blocks: Sequence[GameBlock],
    rows: Iterable[Mapping[str, Any]],
    keys: Sequence[str] = ("return_mean",),
) -> dict[str, Any]:
    """Writes ``<workdir>/evaluation_matrix.json`` (`evaluation_matrix_summary` of ``rows``)
    atomically and returns it."""
    summary = evaluation_matrix_summary(blocks, rows, keys)
    path = Path(workdir) / EVALUATION_MATRIX_FILE
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(summary, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    temporary.replace(path)
    return summary
