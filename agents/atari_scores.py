"""Reference random and human scores on the 57 standard Atari games, and aggregates.

The table is the one of Double DQN (van Hasselt et al., 2016), used by DQN Zoo and Agent57 (Badia
et al., 2020); Nature DQN (Mnih et al., 2015) reported 49 of the games with other human scores
(Pong 9.3 where this table has 14.6). Scores are undiscounted episode returns, each episode capped
at 108,000 frames (30 minutes) and started with up to 30 no-op actions. 'random' is a uniformly
random policy and 'human' a professional games tester.

A human-normalized score maps a game's raw score linearly so that the random policy scores 0 and
the human tester 1. The aggregates follow Agarwal et al. (2021, "Deep RL at the edge of the
statistical precipice"): the median of per-game scores and the interquartile mean (IQM).
`EvalResult` holds one evaluation's returns and gives their human-normalized mean only where
its episodes were as long as the references'.

This module is pure Python + NumPy on purpose: scores in logs can be normalized without ALE.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import numpy.typing as npt


class ReferenceScores(NamedTuple):
    """Raw scores of the uniformly random policy and of the human tester on one game."""

    random: float
    human: float


# Keys are ale-py ROM ids (snake_case).
_REFERENCE_SCORES: dict[str, ReferenceScores] = {
    "alien": ReferenceScores(227.8, 7127.7),
    "amidar": ReferenceScores(5.8, 1719.5),
    "assault": ReferenceScores(222.4, 742.0),
    "asterix": ReferenceScores(210.0, 8503.3),
    "asteroids": ReferenceScores(719.1, 47388.7),
    "atlantis": ReferenceScores(12850.0, 29028.1),
    "bank_heist": ReferenceScores(14.2, 753.1),
    "battle_zone": ReferenceScores(2360.0, 37187.5),
    "beam_rider": ReferenceScores(363.9, 16926.5),
    "berzerk": ReferenceScores(123.7, 2630.4),
    "bowling": ReferenceScores(23.1, 160.7),
    "boxing": ReferenceScores(0.1, 12.1),
    "breakout": ReferenceScores(1.7, 30.5),
    "centipede": ReferenceScores(2090.9, 12017.0),
    "chopper_command": ReferenceScores(811.0, 7387.8),
    "crazy_climber": ReferenceScores(10780.5, 35829.4),
    "defender": ReferenceScores(2874.5, 18688.9),
    "demon_attack": ReferenceScores(152.1, 1971.0),
    "double_dunk": ReferenceScores(-18.6, -16.4),
    "enduro": ReferenceScores(0.0, 860.5),
    "fishing_derby": ReferenceScores(-91.7, -38.7),
    "freeway": ReferenceScores(0.0, 29.6),
    "frostbite": ReferenceScores(65.2, 4334.7),
    "gopher": ReferenceScores(257.6, 2412.5),
    "gravitar": ReferenceScores(173.0, 3351.4),
    "hero": ReferenceScores(1027.0, 30826.4),
    "ice_hockey": ReferenceScores(-11.2, 0.9),
    "jamesbond": ReferenceScores(29.0, 302.8),
    "kangaroo": ReferenceScores(52.0, 3035.0),
    "krull": ReferenceScores(1598.0, 2665.5),
    "kung_fu_master": ReferenceScores(258.5, 22736.3),
    "montezuma_revenge": ReferenceScores(0.0, 4753.3),
    "ms_pacman": ReferenceScores(307.3, 6951.6),
    "name_this_game": ReferenceScores(2292.3, 8049.0),
    "phoenix": ReferenceScores(761.4, 7242.6),
    "pitfall": ReferenceScores(-229.4, 6463.7),
    "pong": ReferenceScores(-20.7, 14.6),
    "private_eye": ReferenceScores(24.9, 69571.3),
    "qbert": ReferenceScores(163.9, 13455.0),
    "riverraid": ReferenceScores(1338.5, 17118.0),
    "road_runner": ReferenceScores(11.5, 7845.0),
    "robotank": ReferenceScores(2.2, 11.9),
    "seaquest": ReferenceScores(68.4, 42054.7),
    "skiing": ReferenceScores(-17098.1, -4336.9),
    "solaris": ReferenceScores(1236.3, 12326.7),
    "space_invaders": ReferenceScores(148.0, 1668.7),
    "star_gunner": ReferenceScores(664.0, 10250.0),
    "surround": ReferenceScores(-10.0, 6.5),
    "tennis": ReferenceScores(-23.8, -8.3),
    "time_pilot": ReferenceScores(3568.0, 5229.2),
    "tutankham": ReferenceScores(11.4, 167.6),
    "up_n_down": ReferenceScores(533.4, 11693.2),
    "venture": ReferenceScores(0.0, 1187.5),
    # Some later tables use other random scores here (random play can beat humans on this game).
    "video_pinball": ReferenceScores(16256.9, 17667.9),
    "wizard_of_wor": ReferenceScores(563.5, 4756.5),
    "yars_revenge": ReferenceScores(3092.9, 54576.9),
    "zaxxon": ReferenceScores(32.5, 9173.3),
}

ATARI_57_GAMES: tuple[str, ...] = tuple(sorted(_REFERENCE_SCORES))

# The episode cap of the protocol behind the table. Returns of episodes cut shorter are not on
# the table's scale (a random policy scores -20.7 at Pong over a whole game, about -2 in 400
# frames), so normalizing them would misstate how far an agent is from random or human play.
REFERENCE_EPISODE_FRAMES = 108_000

_GYM_PREFIX = re.compile(r"^ale/", re.IGNORECASE)
_GYM_SUFFIX = re.compile(r"(-ram)?(noframeskip|deterministic)?(-v\d+)?$", re.IGNORECASE)


def game_key(name: str) -> str:
    """Reduces a game name in any common spelling to a lookup key.

    'ALE/MontezumaRevenge-v5', 'MontezumaRevengeNoFrameskip-v4', 'montezuma_revenge' and
    'Montezuma Revenge' all map to 'montezumarevenge'; ROM ids map to themselves without '_'.
    """
    if not isinstance(name, str):
        raise ValueError(f"A game name must be a string, got {type(name).__name__}: {name!r}")
    stripped = _GYM_SUFFIX.sub("", _GYM_PREFIX.sub("", name.strip()))
    return re.sub(r"[^0-9a-z]", "", stripped.lower())


_REFERENCE_KEYS = frozenset(game_key(game_id) for game_id in ATARI_57_GAMES)


def match_game(name: str, known_ids: tuple[str, ...] | list[str], what: str) -> str:
    """Returns the id in `known_ids` that `name` spells, or raises a one-line ValueError.

    The error lists close matches (difflib) so that a typo such as 'Pongg' says 'pong'.
    """
    by_key = {game_key(game_id): game_id for game_id in known_ids}
    key = game_key(name)
    if key in by_key:
        return by_key[key]
    close = difflib.get_close_matches(key, list(by_key), n=5, cutoff=0.6)
    suggestion = ", ".join(by_key[k] for k in close) if close else "none"
    raise ValueError(f"Unknown Atari game {name!r} (not among {what}); close matches: {suggestion}")


def reference_scores(game: str) -> ReferenceScores:
    """Random and human reference scores of one of the 57 games (any common spelling)."""
    return _REFERENCE_SCORES[match_game(game, ATARI_57_GAMES, "the 57 games with reference scores")]


def comparable_to_reference(max_episode_frames: int) -> bool:
    """Whether returns of episodes capped at ``max_episode_frames`` may be human-normalized: the
    cap must not cut episodes shorter than the reference protocol's 108,000 frames."""
    return max_episode_frames >= REFERENCE_EPISODE_FRAMES


def human_normalized_score(game: str, score: npt.ArrayLike) -> np.ndarray | float:
    """(score - random) / (human - random): 0 at random play, 1 at the human tester's score.

    `score` may be a number or an array of raw scores (e.g. one per seed); the result has its shape.
    """
    random, human = reference_scores(game)
    normalized = (np.asarray(score, dtype=np.float64) - random) / (human - random)
    return float(normalized) if normalized.ndim == 0 else normalized


def human_normalized_scores(scores: Mapping[str, npt.ArrayLike]) -> dict[str, np.ndarray | float]:
    """Human-normalizes a mapping game -> raw score(s), keeping the keys."""
    return {game: human_normalized_score(game, score) for game, score in scores.items()}


def _score_matrix(normalized: Mapping[str, npt.ArrayLike] | npt.ArrayLike) -> np.ndarray:
    """Arranges scores as a (num_runs, num_games) float matrix, the layout used by rliable.

    A mapping game -> score(s) becomes one column per game; a 1-D array is one run over games.
    """
    if isinstance(normalized, Mapping):
        if not normalized:
            raise ValueError("Cannot aggregate an empty mapping of scores")
        columns = [np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in normalized.values()]
        if len({c.shape for c in columns}) != 1 or columns[0].ndim != 1:
            raise ValueError(
                "Every game needs the same number of runs (a scalar or a 1-D array each)"
            )
        matrix = np.stack(columns, axis=-1)
    else:
        matrix = np.asarray(normalized, dtype=np.float64)
        if matrix.ndim == 1:
            matrix = matrix[None, :]
        if matrix.ndim != 2:
            raise ValueError(
                f"Scores must be (num_games,) or (num_runs, num_games); got shape {matrix.shape}"
            )
    if matrix.size == 0:
        raise ValueError("Cannot aggregate an empty set of scores")
    return matrix


class EvalResult(NamedTuple):
    """Returns of the evaluation episodes that finished within the frame cap, each episode cut
    at ``max_episode_frames`` (`agents.atari_env`): what `agents.atari_loop.evaluate` returns."""

    game: str
    returns: list[float]
    frames: int
    max_episode_frames: int

    @property
    def mean_return(self) -> float:
        """Mean raw return of the counted episodes (NaN when none finished)."""
        return float(np.mean(self.returns)) if self.returns else math.nan

    @property
    def human_normalized(self) -> float | None:
        """Human-normalized mean return; None without episodes, without reference scores for the
        game, or when episodes are cut shorter than the references' (`comparable_to_reference`)."""
        if not self.returns or game_key(self.game) not in _REFERENCE_KEYS:
            return None
        if not comparable_to_reference(self.max_episode_frames):
            return None
        return float(human_normalized_score(self.game, self.mean_return))


def median(normalized: Mapping[str, npt.ArrayLike] | npt.ArrayLike) -> float:
    """Median over games of each game's run-averaged normalized score.

    Accepts (num_games,) or (num_runs, num_games) arrays, or a mapping game -> score(s).
    """
    return float(np.median(_score_matrix(normalized).mean(axis=0)))


def iqm(normalized: Mapping[str, npt.ArrayLike] | npt.ArrayLike) -> float:
    """Interquartile mean (Agarwal et al., 2021): mean of the middle 50% of all run x game scores.

    Pools every (run, game) score, drops floor(n/4) from each end after sorting (as
    `scipy.stats.trim_mean(x, 0.25)` does) and averages the rest. Robust to outlier games, and
    uses more of the data than the median. NaN when any score is NaN, as the median is.
    """
    pooled = np.sort(_score_matrix(normalized).ravel())
    if np.isnan(pooled).any():  # sorted last, a NaN would be trimmed as a top score
        return math.nan
    cut = int(0.25 * pooled.size)
    return float(pooled[cut : pooled.size - cut].mean())
