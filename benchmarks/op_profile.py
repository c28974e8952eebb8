"""Where a compiled program's time goes, operation by operation: a `jax.profiler` trace read back.

`jaxpr_equations(jaxpr)` walks a program's equations before compilation (`benchmarks.chunk_ops`
counts its scatters and sorts with it). `top_operations(run, hlo_text, count)` calls ``run()`` once
under `jax.profiler.trace` (a Perfetto trace in a temporary directory), takes each traced event's
self time (its duration minus the events nested inside it on the same thread), keeps the events
named after the program's HLO instructions, and sums them per instruction. Each row names the JAX
operation the instruction came from (the HLO's ``op_name`` metadata, e.g.
``torso/hidden_0/linear/dot_general``), so a row such as ``ynn_fusion.9`` reads as the first layer's
forward product. `python -m benchmarks.loop_breakdown --top_ops=15` prints this for the MinAtar
loop's chunk.

XLA:CPU runs independent operations of one program concurrently on its threads (the Atari
learner's online and target forward passes, for instance), and two operations that overlap each
take longer than either alone: self times then add up to more than the wall time and overstate
each. So each row also carries the operation's share of the wall time (`wall_shares`: at every
instant, each of the k traced operations running splits that instant k ways), and rows are ranked
by it; these shares add up to the time during which any traced operation ran.

The profiler adds a few microseconds to every operation, so read the shares rather than the
absolute times. It keeps a bounded number of events, so the trace of a long program may hold only
its first part: the call counts tell how much. Operations that XLA hands to its thread pool and
does not wait for (Eigen's convolutions) are traced at their dispatch only, so their time appears
nowhere: a busy time well below the untraced wall time says so, which is why the benchmarks print
both.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import tempfile
from typing import Any, Callable, Iterable, Iterator, NamedTuple

_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%([^\s=]+)\s*=")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_CALLS = re.compile(r"calls=%([^\s,}]+)")
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%(\S+)\s.*\{\s*$")
# Wrappers that JAX's lowering adds around every traced operation's name.
_WRAPPER_PARTS = re.compile(
    r"^(jit\(.*\)|pjit\(.*\)|vmap\(.*\)|closed_call|while|body|cond|branch_\d+)$"
)


class OperationTime(NamedTuple):
    """One HLO instruction's traced time over a run."""

    name: str  # the HLO instruction
    milliseconds: float  # summed self time over the run
    calls: int
    source: str  # the JAX operation it came from ('' when the HLO names none)
    wall_milliseconds: float = 0.0  # its share of the wall time (`wall_shares`)


class Profile(NamedTuple):
    """The rows `top_operations` keeps, and the totals over all the program's instructions."""

    rows: list[OperationTime]
    traced_milliseconds: float  # summed self time
    busy_milliseconds: float  # time during which any traced instruction ran


def jaxpr_equations(jaxpr, inside_cond: bool = False) -> Iterator[tuple[Any, bool]]:
    """Every equation of ``jaxpr`` and of the jaxprs nested in it (scan and cond bodies, calls),
    each with whether it sits inside a ``cond``: what a program will run, read before XLA
    compiles it (a count of scatters or sorts, say, which a GPU runs as kernels of their own)."""
    for eqn in jaxpr.eqns:
        yield eqn, inside_cond
        for value in eqn.params.values():
            for sub in value if isinstance(value, (list, tuple)) else [value]:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from jaxpr_equations(inner, inside_cond or eqn.primitive.name == "cond")


def instruction_sources(hlo_text: str) -> dict[str, str]:
    """{HLO instruction name: the JAX operation it came from} for every instruction in
    ``hlo_text`` (a compiled program's ``as_text()``), the source shortened to its meaningful
    path (the ``jit``/``vmap``/``while``/``body`` wrappers dropped). A fusion that carries no
    source of its own takes its fused computation's root's, or that root's name in brackets
    (e.g. ``[convolution-window-dilated.3]``, a kernel gradient XLA rewrote) when it has none."""
    sources, calls, roots = {}, {}, {}
    computation = ""
    for line in hlo_text.splitlines():
        header = _COMPUTATION.match(line)
        if header:
            computation = header.group(1)
            continue
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        op_name = _OP_NAME.search(line)
        parts = op_name.group(1).split("/") if op_name else []
        source = "/".join(p for p in parts if not _WRAPPER_PARTS.match(p))
        sources[match.group(1)] = source
        called = _CALLS.search(line)
        if called:
            calls[match.group(1)] = called.group(1)
        if line.lstrip().startswith("ROOT"):  # XLA's own rewrites carry no source: its name
            roots[computation] = source or f"[{match.group(1)}]"
    for name, computation in calls.items():
        if not sources[name]:
            sources[name] = roots.get(computation, "")
    return sources


def self_times(events: Iterable[dict[str, Any]]) -> list[tuple[str, float]]:
    """(name, self time in µs) of every complete ('X') trace event: its duration minus the
    durations of the events directly nested inside it on the same thread."""
    by_thread = collections.defaultdict(list)
    for event in events:
        if event.get("ph") == "X" and "dur" in event and "ts" in event:
            by_thread[(event.get("pid"), event.get("tid"))].append(event)
    result = []
    for thread_events in by_thread.values():
        thread_events.sort(key=lambda e: (float(e["ts"]), -float(e["dur"])))
        stack: list[list] = []  # [end, name, self time]
        for event in thread_events:
            start, duration = float(event["ts"]), float(event["dur"])
            while stack and stack[-1][0] <= start:
                _, name, own = stack.pop()
                result.append((name, own))
            if stack:
                stack[-1][2] -= duration
            stack.append([start + duration, event["name"], duration])
        result.extend((name, own) for _, name, own in stack)
    return result


def innermost_segments(events: Iterable[dict[str, Any]]) -> list[tuple[str, float, float]]:
    """(name, start, end) pieces of every complete ('X') event during which it is the innermost
    event of its thread: the time its thread spends in it and in nothing nested inside it. The
    pieces of one event add up to its self time (`self_times`)."""
    by_thread = collections.defaultdict(list)
    for event in events:
        if event.get("ph") == "X" and "dur" in event and "ts" in event:
            by_thread[(event.get("pid"), event.get("tid"))].append(event)
    pieces = []

    def close(stack, cursor, until):
        """Emits the running event's piece [cursor, until); returns the new cursor."""
        if stack and until > cursor:
            pieces.append((stack[-1][1], cursor, until))
        return max(cursor, until)

    for thread_events in by_thread.values():
        thread_events.sort(key=lambda e: (float(e["ts"]), -float(e["dur"])))
        stack: list[tuple[float, str]] = []  # (end, name), innermost last
        cursor = 0.0
        for event in thread_events:
            start, duration = float(event["ts"]), float(event["dur"])
            while stack and stack[-1][0] <= start:
                cursor = close(stack, cursor, stack[-1][0])
                stack.pop()
            cursor = close(stack, cursor, start)
            stack.append((start + duration, event["name"]))
            cursor = start
        while stack:
            cursor = close(stack, cursor, stack[-1][0])
            stack.pop()
    return pieces


def wall_shares(
    events: Iterable[dict[str, Any]], names: Iterable[str]
) -> tuple[dict[str, float], float]:
    """({name: µs of wall time}, µs during which any of them ran) for the events named in
    ``names``: at every instant, each of the k events running innermost on their threads (see
    `innermost_segments`) is given 1/k of it, so the shares add up to the busy time."""
    wanted = set(names)
    boundaries = []
    for name, start, end in innermost_segments(events):
        if name in wanted:
            boundaries += [(start, 1, name), (end, -1, name)]
    boundaries.sort(key=lambda b: (b[0], b[1]))  # at one instant, ends before starts
    shares: dict[str, float] = collections.defaultdict(float)
    running: collections.Counter = collections.Counter()
    busy, previous = 0.0, None
    for time, change, name in boundaries:
        count = sum(running.values())
        if count and time > previous:
            for running_name, n in running.items():
                shares[running_name] += (time - previous) * n / count
            busy += time - previous
        running[name] += change
        if not running[name]:
            del running[name]
        previous = time
    return dict(shares), busy


def operation_times(
    events: Iterable[dict[str, Any]], sources: dict[str, str]
) -> list[OperationTime]:
    """The traced self time and wall share of each HLO instruction named in ``sources``,
    largest wall share first."""
    events = list(events)
    totals: dict[str, float] = collections.defaultdict(float)
    calls: dict[str, int] = collections.defaultdict(int)
    for name, own in self_times(events):
        if name in sources:
            totals[name] += own
            calls[name] += 1
    shares, _ = wall_shares(events, totals)
    rows = [
        OperationTime(n, totals[n] / 1e3, calls[n], sources[n], shares.get(n, 0.0) / 1e3)
        for n in totals
    ]
    return sorted(rows, key=lambda row: (-row.wall_milliseconds, -row.milliseconds))


def traced_events(run: Callable[[], Any]) -> list[dict[str, Any]]:
    """The trace events of one call of ``run`` (which must wait for its result)."""
    import jax  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as directory:
        with jax.profiler.trace(directory, create_perfetto_trace=True):
            run()
        paths = glob.glob(os.path.join(directory, "**", "*.trace.json.gz"), recursive=True)
        if not paths:
            raise RuntimeError("jax.profiler wrote no Perfetto trace")
        with gzip.open(max(paths, key=os.path.getmtime), "rt") as stream:
            trace = json.load(stream)
    return trace["traceEvents"] if isinstance(trace, dict) else trace


def top_operations(run: Callable[[], Any], hlo_text: str, count: int) -> Profile:
    """The ``count`` HLO instructions of ``hlo_text`` with the largest wall shares in one call
    of ``run`` (which calls the compiled program and waits for its result), and the totals over
    all the program's traced instructions."""
    rows = operation_times(traced_events(run), instruction_sources(hlo_text))
    # The wall shares of all the instructions add up to the time any of them ran.
    busy = sum(row.wall_milliseconds for row in rows)
    return Profile(rows[:count], sum(row.milliseconds for row in rows), busy)


HEADER = "wall time, its share, self time, calls, wall time per call, instruction, source"


def format_rows(profile: Profile) -> list[str]:
    """One line per operation, in the order of `HEADER`; shares are of the busy time."""
    busy = max(profile.busy_milliseconds, 1e-9)
    return [
        f"  {row.wall_milliseconds:8.2f} ms {row.wall_milliseconds / busy:6.1%}"
        f" {row.milliseconds:8.2f} ms {row.calls:6d} x "
        f"{1e3 * row.wall_milliseconds / max(row.calls, 1):8.1f} us  {row.name:<28} {row.source}"
        for row in profile.rows
    ]
