"""What the benchmarks share: the fastest of several runs, the FLOP rates they compare, and the
entry point of their command lines.

A shared machine's noise only ever adds time, so the fastest run is the best estimate of what the
code costs. A learner's FLOP rate (XLA's own count of a compiled step x steps/s) set against a large
float32 matrix product on the same device says how much of the machine the learner uses, and so
how much faster the same work could run at all. A setting a benchmark cannot take ends its
command line with one line, not a traceback (`run_main`). Flag-free, so that every benchmark
module can import it.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence


def one_line_errors(main: Callable[..., Any], name: str) -> Callable[..., Any]:
    """``main`` with a ValueError it raises, a setting the benchmark cannot take, turned into one
    line, ``benchmarks.<name>: <the message's first line>``, and exit status 1 (``SystemExit``),
    where a traceback would bury the cause."""

    def guarded(*args: Any) -> Any:
        try:
            return main(*args)
        except ValueError as error:
            message = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise SystemExit(f"benchmarks.{name}: {message}") from None

    return guarded


def positive_counts(flag: str, values: Sequence[str], what: str) -> list[int]:
    """A list flag's values (``--seeds=1,8``) as counts of at least 1; anything else (or none)
    is a one-line ValueError naming the flag, before anything is compiled."""
    if not values:
        raise ValueError(f"--{flag} is empty; give {what} counts of at least 1, such as 1,8")
    for value in values:
        if not value.strip().isdigit() or int(value) < 1:
            raise ValueError(f"--{flag} takes {what} counts of at least 1, got {value!r}")
    return [int(value) for value in values]


def parse_flags(argv: list[str], name: str) -> list[str]:
    """absl's flags parser with the launchers' conventions: a help flag prints the usage (the
    module's docstring and flags; all modules' flags with ``--helpfull``) and exits 0, and a bad
    flag is one line, ``benchmarks.<name>: <error> (see --help)``, and exit status 1; logging
    shows warnings unless ``--verbosity`` is given."""
    from absl import app, flags  # noqa: PLC0415

    from plasticity.launch import HELP_ARGS  # noqa: PLC0415 - the launchers' (absl's exit 1)

    if any(arg in HELP_ARGS for arg in argv[1:]):
        app.usage(shorthelp="--helpfull" not in argv, writeto_stdout=True, exitcode=0)
    try:
        remaining = flags.FLAGS(argv)
    except flags.Error as error:
        message = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise SystemExit(f"benchmarks.{name}: {message} (see --help)") from None
    if len(remaining) > 1:  # e.g. '--num_envs 1 8': the 8 would be dropped without a word
        extra = " ".join(remaining[1:])
        message = f"unexpected argument {extra!r}; flags take --name=value"
        raise SystemExit(f"benchmarks.{name}: {message} (see --help)")
    if not flags.FLAGS["verbosity"].present:  # as the launchers: JAX's start-up INFO lines hidden
        flags.FLAGS.verbosity = -1
    return remaining


def run_main(main: Callable[[list[str]], Any], name: str) -> None:
    """Runs a benchmark's ``main`` with ``absl.app.run``, its ValueErrors one line each
    (`one_line_errors`) and its flags parsed by `parse_flags`: the entry point of every benchmark
    with absl flags."""
    from absl import app  # noqa: PLC0415

    app.run(one_line_errors(main, name), flags_parser=lambda argv: parse_flags(argv, name))


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


def compiled_flops(executable) -> float:
    """FLOPs of one call of a compiled JAX program, by XLA's cost analysis (NaN where the backend
    gives none). XLA counts a ``while`` body once, so time programs without loops with it."""
    cost = executable.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", float("nan"))) if cost else float("nan")


def matmul_flops(size: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of a jitted float32 ``size`` x ``size`` matrix product on the default device: the
    rate the machine's matrix units reach on large, well-shaped work (the fastest of 3 timings)."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    a = jnp.ones((size, size), jnp.float32)
    product = jax.jit(lambda x: x @ x)

    def products(_):
        out = a
        for _ in range(repeats):
            out = product(a)
        return out

    products(None)
    return 2 * size**3 * repeats / fastest_seconds(products, 3)
