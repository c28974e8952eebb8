"""The progress bar of every launcher: whole-run elapsed time and ETA, units/s and updates/s.

A thin layer over tqdm that draws what a user needs to trust a long run:

    train_atari  23%|██▎       | 2.36k/10.2k frames, elapsed 01:12, ETA 04:03, 412 frames/s,
        25.7 updates/s | game=pong (1/4), last_return=—, phase=evaluating

* **elapsed** counts from this launch's start and is never reset (not per block, not per task);
* the **rate** (units/s, and learner updates/s when the loop reports them) is measured over the
  time spent training only: the clock pauses in a *phase* (compiling, evaluating, starting
  emulators, ...), which the bar names while it lasts, so it never sits frozen without saying why;
* the **ETA** is the units left over that rate (nothing until a rate has been measured);
* the postfix names where the run stands (game, task, variant, last score).

Only the lead process shows a bar.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import jax
from tqdm.auto import tqdm

# tqdm puts ", " before the postfix: "2.36k/10.2k frames, elapsed 01:12, ETA 04:03, ..."
BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {unit}s{postfix}"


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_seconds(seconds: float) -> str:
    """'01:12', '1:02:03' or '3d 04:00:00': tqdm's style, with days for long runs."""
    seconds = max(0, int(round(seconds)))
    days, rest = divmod(seconds, 86_400)
    text = tqdm.format_interval(rest)
    return f"{days}d {text}" if days else text


def format_rate(value: float) -> str:
    """'412', '25.7', '0.31': three significant digits at most, no scientific notation."""
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


class Progress:
    """A progress bar counting `unit`s up to `total` (module docstring).

    Args:
      total: units in the whole run (e.g. optimizer steps, environment frames).
      description: text before the bar.
      unit: the counted unit ('frame' gives 'frames/s').
      initial: units already done (a resumed run); the rate counts only this launch's.
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
        self.unit = unit
        self.total = int(total)
        self._started = time.monotonic()
        self._training_seconds = 0.0
        self._clock_from: float | None = self._started  # None while paused
        self._units = 0
        self._updates = 0
        self._count = int(initial)  # kept here too: a disabled tqdm bar does not count
        self._fields: dict[str, Any] = {}
        self._bar = tqdm(
            total=total,
            desc=description,
            unit=unit,
            initial=initial,
            unit_scale=total >= 100_000,  # 1.2M/400M frames; small totals as plain counts
            dynamic_ncols=True,
            disable=disable,
            file=sys.stderr,
            bar_format=BAR_FORMAT,
            mininterval=0.5,
        )
        self._refresh_postfix()

    # Clocks ------------------------------------------------------------------------------------

    def _seconds(self) -> float:
        running = time.monotonic() - self._clock_from if self._clock_from is not None else 0.0
        return self._training_seconds + running

    def pause(self) -> None:
        """Stops the rate clock (a phase that is not training begins)."""
        if self._clock_from is not None:
            self._training_seconds += time.monotonic() - self._clock_from
            self._clock_from = None

    def resume(self) -> None:
        """Restarts the rate clock."""
        if self._clock_from is None:
            self._clock_from = time.monotonic()

    def rates(self) -> tuple[float | None, float | None]:
        """(units/s, updates/s) of this launch's training time, None before any was measured."""
        seconds = self._seconds()
        if self._units <= 0 or seconds <= 0:
            return None, None
        updates = self._updates / seconds if self._updates else None
        return self._units / seconds, updates

    def eta_seconds(self) -> float | None:
        """Seconds left at the measured rate (None before a rate exists)."""
        rate, _ = self.rates()
        if rate is None:
            return None
        return max(0.0, self.total - self._count) / rate

    # Drawing -----------------------------------------------------------------------------------

    def _timing(self) -> str:
        parts = [f"elapsed {format_seconds(time.monotonic() - self._started)}"]
        eta = self.eta_seconds()
        parts.append(f"ETA {format_seconds(eta)}" if eta is not None else "ETA —")
        rate, updates = self.rates()
        if rate is not None:
            parts.append(f"{format_rate(rate)} {self.unit}s/s")
        if updates is not None:
            parts.append(f"{format_rate(updates)} updates/s")
        return ", ".join(parts)

    def _refresh_postfix(self, refresh: bool = False) -> None:
        fields = ", ".join(f"{k}={_format_value(v)}" for k, v in self._fields.items())
        text = self._timing() + (f" | {fields}" if fields else "")
        self._bar.set_postfix_str(text, refresh=refresh)

    def set_postfix(self, **fields: Any) -> None:
        """Replaces the `key=value` fields after the bar (e.g. task='3/30', game='pong')."""
        self._fields = dict(fields)
        self._refresh_postfix(refresh=True)

    def advance(self, count: int, updates: int = 0, **fields: Any) -> None:
        """Records `count` more units (and `updates` learner updates) done; `fields`, when given,
        replace the postfix."""
        self._units += int(count)
        self._updates += int(updates)
        self._count += int(count)
        if fields:
            self._fields = dict(fields)
        self._refresh_postfix()
        self._bar.update(count)

    @property
    def count(self) -> int:
        """Units done so far (including `initial`), whether or not the bar is shown."""
        return self._count

    def write(self, message: str) -> None:
        """Prints a line above the bar without breaking it."""
        self._bar.write(message, file=sys.stderr)

    def close(self) -> None:
        self._refresh_postfix(refresh=True)
        self._bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
