"""A progress bar for long training loops: rate (steps/s or frames/s), ETA and a postfix.

A thin layer over tqdm so every launcher shows the same thing: a count of units done out of a
total, the rate and time left that tqdm estimates, and a short postfix naming where the run
stands (current task, variant, game, last score). Only the lead process shows a bar.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import jax
from tqdm.auto import tqdm


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class Progress:
    """A progress bar counting `unit`s up to `total`.

    Args:
      total: units in the whole run (e.g. optimizer steps, environment frames).
      description: text before the bar.
      unit: the unit shown in the rate ('step' gives 'step/s').
      initial: units already done (a resumed run).
      disable: hide the bar; default: hidden on processes other than 0.
    """

    def __init__(
        self,
        total: int,
        description: str = "",
        unit: str = "step",
        initial: int = 0,
        disable: bool | None = None,
    ):
        if disable is None:
            disable = jax.process_index() != 0
        self._bar = tqdm(
            total=total,
            desc=description,
            unit=unit,
            initial=initial,
            unit_scale=True,
            dynamic_ncols=True,
            disable=disable,
            file=sys.stderr,
            smoothing=0.1,
        )

    def set_postfix(self, **fields: Any) -> None:
        """Shows `key=value` pairs after the bar (e.g. task='3/30', game='Pong')."""
        self._bar.set_postfix_str(
            ", ".join(f"{k}={_format_value(v)}" for k, v in fields.items()), refresh=True
        )

    def advance(self, count: int, **fields: Any) -> None:
        """Records `count` more units done and, optionally, a new postfix."""
        if fields:
            self.set_postfix(**fields)
        self._bar.update(count)

    def reset_clock(self) -> None:
        """Restarts the rate estimate (e.g. after a compilation that did no work)."""
        if self._bar.disable:
            return
        self._bar.start_t = time.time()
        self._bar.last_print_t = self._bar.start_t
        self._bar.last_print_n = self._bar.n
        self._bar.initial = self._bar.n

    @property
    def count(self) -> int:
        """Units done so far (including `initial`)."""
        return int(self._bar.n)

    def write(self, message: str) -> None:
        """Prints a line above the bar without breaking it."""
        self._bar.write(message, file=sys.stderr)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
