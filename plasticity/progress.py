"""The progress bar of every launcher: whole-run elapsed time and ETA, units/s and updates/s.

A thin layer over tqdm that draws what a user needs to trust a long run:

    train_atari run [evaluating]  23%|██▎     | 2.36k/10.2k frames, elapsed 01:12, ETA 04:03,
        412 frames/s | game=pong (1/4), last_return=—, 25.7 updates/s

* **elapsed** counts from this launch's start and is never reset (not per block, not per task),
  and ticks every second even while a compiled call runs;
* the **rate** (units/s, and learner updates/s when the loop reports them) is measured over the
  time spent training only: the clock pauses in a *phase* (compiling, evaluating, starting
  emulators, saving a checkpoint, ...), which the bar names first, so it never sits frozen
  without saying why;
* the **ETA** is the units left over that rate (nothing until a rate has been measured); the
  harness restarts the rate once the run reaches its steady pace (RL: once learning runs, not
  while the replay fills; after a resume, once its first units are done), so the ETA is not
  skewed by a fast start or a slow one;
* the postfix names where the run stands (game, task, variant, last score); what does not fit
  the terminal's width moves, in whole parts, to a status line under the bar, so the bar keeps a
  visible length and nothing is lost on a narrow terminal:

    train_atari rainbow  72%|████▎     | 36680/51200 frames, elapsed 02:04, ETA 00:29, 498 frames/s
      game=breakout (4/4), last_return=1, 25.7 updates/s

Output that is not a terminal (a log file, a batch job's output) gets no bar but a plain line at
the start, every `PLAIN_INTERVAL_SECONDS` (a long compile included) and at the end. Only the lead
process shows either.
"""

from __future__ import annotations

import math
import shutil
import sys
import threading
import time
from typing import Any

import jax
from tqdm.auto import tqdm

# tqdm puts ", " before the postfix: "2.36k/10.2k frames, elapsed 01:12, ETA 04:03, ..."
BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {unit}s{postfix}"
PLAIN_FORMAT = "{desc} {percentage:3.0f}% {n_fmt}/{total_fmt} {unit}s{postfix}"
PLAIN_INTERVAL_SECONDS = 30.0  # a plain line at least this often (output that is not a terminal)
MIN_BAR_CELLS = 10  # fields are left out before the bar gets shorter than this
REDRAW_SECONDS = 1.0  # the live bar's elapsed time ticks while a compiled call runs


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


def _fitting(parts: list[str], room: int) -> str:
    """The parts joined by ', ' while they fit in ``room`` characters: a part that does not is
    left out whole, with those after it (the first is cut if it alone is too long)."""
    text = parts[0][:room] if parts else ""
    for part in parts[1:]:
        if len(text) + 2 + len(part) > room:
            break
        text += ", " + part
    return text


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _terminal_width() -> int:
    """The terminal's columns less two: a line that reaches the last columns makes the terminal
    wrap whatever comes next (the two characters of an echoed ^C) onto the line below, where the
    next redraw leaves the bar's old line behind."""
    return max(shutil.get_terminal_size((100, 24)).columns - 2, 20)


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
        self.description = description
        self._started = time.monotonic()
        self._training_seconds = 0.0
        self._clock_from: float | None = self._started  # None while paused
        self._units = 0
        # (units, updates, training seconds) the rate counts from; None: no ETA until it is set.
        self._rate_origin: tuple[int, int, float] | None = (0, 0, 0.0)
        self._updates = 0
        self._count = int(initial)  # kept here too: a disabled tqdm bar does not count
        self._fields: dict[str, Any] = {}
        self._phase: str | None = None
        self._unit_scale = total >= 100_000  # 1.2M/400M frames; small totals as plain counts
        # Not a terminal: plain lines instead of a bar redrawn with carriage returns.
        self._plain = not disable and not _is_terminal(sys.stderr)
        self._last_plain = -math.inf
        self._bar = tqdm(
            total=total,
            desc=description,
            unit=unit,
            initial=initial,
            unit_scale=self._unit_scale,
            ncols=_terminal_width(),
            disable=disable or self._plain,
            file=sys.stderr,
            bar_format=BAR_FORMAT,
            mininterval=0.5,
        )
        self._status: tqdm | None = None  # the status line under the bar (`_show_status`)
        self._lock = threading.RLock()
        self._closed = threading.Event()
        self._ticker = None
        if not disable:  # elapsed ticks (and plain lines come) while the main thread waits
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()
        self._refresh_postfix()

    # Clocks ------------------------------------------------------------------------------------

    def _seconds(self) -> float:
        with self._lock:  # the ticker thread reads the clock the main thread pauses
            started = self._clock_from
            running = time.monotonic() - started if started is not None else 0.0
            return self._training_seconds + running

    def pause(self) -> None:
        """Stops the rate clock (a phase that is not training begins)."""
        with self._lock:
            if self._clock_from is not None:
                self._training_seconds += time.monotonic() - self._clock_from
                self._clock_from = None

    def resume(self) -> None:
        """Restarts the rate clock."""
        with self._lock:
            if self._clock_from is None:
                self._clock_from = time.monotonic()

    def measure_rate_from_here(self) -> None:
        """The rate (and so the ETA) counts from now on: what came before, e.g. a replay filling
        at many times the speed of learning, would make the run look far shorter than it is."""
        with self._lock:
            self._rate_origin = (self._units, self._updates, self._seconds())

    def wait_for_steady_pace(self) -> None:
        """No ETA until `measure_rate_from_here` (the rate still shows, over the launch): the pace
        until then, e.g. a replay filling before learning, says nothing of the run's length."""
        with self._lock:
            self._rate_origin = None

    def training_seconds(self) -> float:
        """Seconds of this launch spent training (the rate clock)."""
        return self._seconds()

    def _rates_since(self, origin: tuple[int, int, float]) -> tuple[float | None, float | None]:
        """(units/s, updates/s) of the training time since ``origin`` (units, updates, training
        seconds), None when no unit was counted since."""
        with self._lock:
            units, updates, start = origin
            counted, elapsed = self._units - units, self._seconds() - start
            if counted > 0 and elapsed > 0:
                learned = self._updates - updates
                return counted / elapsed, learned / elapsed if learned else None
        return None, None

    def rates(self) -> tuple[float | None, float | None]:
        """(units/s, updates/s) of this launch's training time since `measure_rate_from_here`
        (over all of it until units were counted since then), None before any was measured."""
        with self._lock:
            since = self._rates_since(self._rate_origin or (0, 0, 0.0))
            return since if since[0] is not None else self._rates_since((0, 0, 0.0))

    def eta_seconds(self) -> float | None:
        """Seconds left at the rate measured since `measure_rate_from_here` (None while waiting
        for the steady pace, and until units were counted since it was reached: the launch's
        rate before holds its start, a replay filling or the first compiles); 0 once the count
        reached the total, steady pace or not (a short run may end before its pace settles)."""
        with self._lock:
            if self._count >= self.total:
                return 0.0
            if self._rate_origin is None:
                return None
            rate, _ = self._rates_since(self._rate_origin)
        if rate is None:
            return None
        return max(0.0, self.total - self._count) / rate

    # Drawing -----------------------------------------------------------------------------------

    def _timing(self) -> tuple[list[str], list[str]]:
        """(elapsed, ETA and units/s; updates/s when measured), as the postfix shows them."""
        parts = [f"elapsed {format_seconds(time.monotonic() - self._started)}"]
        eta = self.eta_seconds()
        parts.append(f"ETA {format_seconds(eta)}" if eta is not None else "ETA —")
        rate, updates = self.rates()
        if rate is not None:
            parts.append(f"{format_rate(rate)} {self.unit}s/s")
        return parts, [f"{format_rate(updates)} updates/s"] if updates is not None else []

    def _postfix_split(self, room: int | None) -> tuple[str, list[str]]:
        """(the postfix that fits in ``room`` characters, the parts left over), None: no limit.

        The elapsed time always shows; ETA and units/s, the fields and updates/s follow in that
        order while they fit, so a narrow terminal moves whole parts from the end (to the status
        line) rather than tqdm cutting one in the middle."""
        first, updates = self._timing()
        fields = [f"{k}={_format_value(v)}" for k, v in self._fields.items()]
        text = first[0]
        parts = [(part, ", ") for part in first[1:]]
        parts += [(part, " | " if i == 0 else ", ") for i, part in enumerate(fields)]
        parts += [(part, ", ") for part in updates]
        for index, (part, separator) in enumerate(parts):
            joined = text + separator + part
            if room is not None and len(joined) + 2 > room:  # tqdm adds ", " before it
                return text, [rest for rest, _ in parts[index:]]
            text = joined
        return text, []

    def _postfix(self, room: int | None) -> str:
        """The postfix that fits in ``room`` characters (`_postfix_split`)."""
        return self._postfix_split(room)[0]

    def _description(self) -> str:
        return f"{self.description} [{self._phase}]" if self._phase else self.description

    def _refresh_postfix(self, refresh: bool = False) -> None:
        with self._lock:
            if self._plain:
                self._plain_line(force=refresh)
                return
            width = _terminal_width()
            fixed = len(self._description()) + len(" 100%|| ") + 2 * len(f"{self.total:,}") + 9
            self._bar.ncols = width
            self._bar.set_description_str(self._description(), refresh=False)
            room = width - fixed - MIN_BAR_CELLS - len(self.unit)
            postfix, rest = self._postfix_split(max(room, 0))
            self._bar.set_postfix_str(postfix, refresh=refresh)
            self._show_status(_fitting(rest, width - 2), refresh)

    def _show_status(self, text: str, refresh: bool) -> None:
        """The parts the bar's line had no room for, on a line under it: opened the first time
        there are any, kept (blank once all fit again) until the bar closes."""
        if self._bar.disable or (not text and self._status is None):
            return
        if self._status is None:
            self._status = tqdm(total=0, file=sys.stderr, bar_format="{desc}", mininterval=0.5)
        self._status.set_description_str("  " + text, refresh=refresh)

    def _plain_line(self, force: bool = False) -> None:
        """One plain status line, when forced or when the last is old enough."""
        now = time.monotonic()
        if not force and now - self._last_plain < PLAIN_INTERVAL_SECONDS:
            return
        self._last_plain = now
        line = tqdm.format_meter(
            self._count,
            self.total,
            now - self._started,
            prefix=self._description(),
            unit=self.unit,
            unit_scale=self._unit_scale,
            bar_format=PLAIN_FORMAT,
            postfix=self._postfix(None),
        )
        print(line, file=sys.stderr, flush=True)

    def _tick(self) -> None:
        while not self._closed.wait(REDRAW_SECONDS):
            self._refresh_postfix(refresh=not self._plain)

    def set_phase(self, name: str | None) -> None:
        """Names what the loop does instead of training (None: training again), first on the bar
        (and on the plain lines that come while it lasts)."""
        with self._lock:
            self._phase = name
            self._refresh_postfix(refresh=not self._plain)

    def set_postfix(self, **fields: Any) -> None:
        """Replaces the `key=value` fields after the bar (e.g. task='3/30', game='pong')."""
        self._fields = dict(fields)
        self._refresh_postfix(refresh=not self._plain)

    def advance(self, count: int, updates: int = 0, **fields: Any) -> None:
        """Records `count` more units (and `updates` learner updates) done; `fields`, when given,
        replace the postfix."""
        with self._lock:
            self._units += int(count)
            self._updates += int(updates)
            self._count += int(count)
            if fields:
                self._fields = dict(fields)
            self._refresh_postfix()
            self._bar.update(count)

    @property
    def launch_count(self) -> int:
        """Units done in this launch (a resumed run's earlier units left out)."""
        return self._units

    @property
    def count(self) -> int:
        """Units done so far (including `initial`), whether or not the bar is shown."""
        return self._count

    def write(self, message: str) -> None:
        """Prints a line above the bar without breaking it."""
        with self._lock:
            self._bar.write(message, file=sys.stderr)

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        if self._ticker is not None:
            self._ticker.join()
        self._phase = None
        self._refresh_postfix(refresh=True)
        self._bar.close()
        if self._status is not None:  # after the bar: its final line stays above this one
            self._status.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
