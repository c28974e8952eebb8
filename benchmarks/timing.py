"""The timing rule the benchmarks share: the fastest of several runs, results blocked on.

A shared machine's noise only ever adds time, so the fastest run is the best estimate of what the
code costs. Flag-free, so that every benchmark module can import it.
"""

from __future__ import annotations

import time
from typing import Any, Callable


def fastest_seconds(
    run: Callable[[Any], Any], repeats: int, prepare: Callable[[], Any] = lambda: None
) -> float:
    """Wall seconds of the fastest of ``repeats`` calls of ``run(prepare())``, each waiting for
    its result; ``prepare`` (not timed) makes each call's fresh input, e.g. a copy of a state the
    call donates."""
    import jax  # noqa: PLC0415

    best = float("inf")
    for _ in range(max(1, repeats)):
        argument = jax.block_until_ready(prepare())
        started = time.perf_counter()
        jax.block_until_ready(run(argument))
        best = min(best, time.perf_counter() - started)
    return best
