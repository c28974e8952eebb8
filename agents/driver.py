"""The one host loop of every RL trainer: segments, blocks and chunks on the run harness.

A run is a list of `agents.sequence.Segment`s (the game sequence, then one fresh-network reference
per later game: the first game's is the sequence's first block); a segment is a list of game
blocks; a block is cut into chunks of ``checkpoint_every_frames`` frames (and its end).
`train_segments` walks them and does, once for both loops, what a user sees:

* at a block start: the switch policy and the 'switch' rows (after the first block), new
  episodes, the intervention when ``intervention.at_switch`` asks (all the loop's ``start_block``);
* per chunk: the loop's ``run_chunk`` plays and learns, returns its 'train' and 'diagnostics'
  rows (written for the sequence; a reference writes only its final scores);
* at a block end: every game seen so far is evaluated ('eval' rows; a reference evaluates its own
  game: 'eval_fresh', and after the sequence's first block its game's rows double as that
  game's 'eval_fresh') and ``evaluation_matrix.json`` is rewritten (`agents.evaluation_matrix`);
* after every chunk: a checkpoint (`plasticity.run.Run.save`, parameters checked for NaN/Inf
  first) recording where the run stands (segment, block, iteration) and the loop's own counters;
  then the stop question (preemption, early stop);
* a relaunch restores the newest checkpoint that loads and continues from that position.

A loop (`agents.minatar_loop.MinAtarLoop`, `agents.atari_loop.AtariLoop`) implements the
`Loop` protocol: what its state is and how a chunk runs; nothing else.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from agents import evaluation_matrix
from agents.probes import syncs_target
from agents.sequence import Segment, first_block_reference_rows
from plasticity.run import Run, RunResult
from plasticity.workdir import SWEEP_FIELDS, read_metrics


class Loop(Protocol):
    """What a trainer plugs into `train_segments`; ``state`` is whatever the loop carries."""

    matrix_keys: Sequence[str]  # scores of evaluation_matrix.json
    seeds: Sequence[int]  # the seeds the loop trains together

    def init(self, segment: Segment) -> Any:
        """The state of a segment's start: the seeds' initial networks, empty replays."""

    def template(self, segment: Segment) -> Any:
        """Arrays or shapes of the state, as a checkpoint restore target."""

    def restored(self, state: Any, metadata: dict[str, Any]) -> Any:
        """A restored state (placed on the run's devices) and the loop's own counters."""

    def metadata(self) -> dict[str, Any]:
        """The loop's own counters, saved with every checkpoint."""

    def start_block(
        self, run: Run, state: Any, segment: Segment, block: int, resumed: bool
    ) -> tuple[Any, list[dict[str, Any]]]:
        """(state, 'switch' rows) at the start of ``block`` (``resumed``: mid-block, from a
        checkpoint: only new episodes)."""

    def run_chunk(
        self, run: Run, state: Any, segment: Segment, block: int, start: int, stop: int, log
    ) -> tuple[Any, int]:
        """(state, iteration reached) after iterations [start, stop) of ``block``, handing its
        rows to ``log`` (which drops a reference's); a loop that polls
        ``run.preemption_requested()`` inside a chunk may stop before ``stop``."""

    def evaluate(self, run: Run, state: Any, segment: Segment, block: int) -> list[dict[str, Any]]:
        """Rows of the evaluation after ``block``."""

    def params(self, state: Any) -> Any:
        """The online parameters (checked for NaN/Inf before every save)."""

    def where(self, segment: Segment, block: int) -> str:
        """'sequence, seeds [0, 1], breakout': where the run stands, for divergence messages."""

    def end_block(self) -> None:
        """Releases what a block held (emulators)."""


@dataclasses.dataclass(frozen=True)
class Position:
    """Where a run stands: the next iteration to play (block-relative) of a block of a segment."""

    segment: int = 0
    block: int = 0
    iteration: int = 0


def next_position(segments: Sequence[Segment], position: Position) -> Position:
    """``position`` normalized: past a block's end means the next block (or segment)."""
    segment = segments[position.segment]
    if position.iteration < segment.plan.iterations[position.block]:
        return position
    if position.block + 1 < len(segment.blocks):
        return Position(position.segment, position.block + 1, 0)
    return Position(position.segment + 1, 0, 0)


def frames_done(segments: Sequence[Segment], position: Position) -> int:
    """Frames of the run (every segment counted) before ``position``."""
    done = sum(segment.total_frames for segment in segments[: position.segment])
    if position.segment < len(segments):
        segment = segments[position.segment]
        done += segment.frames_before(position.block)
        done += position.iteration * segment.frames_per_iteration
    return done


def tensorboard_prefix(row: dict[str, Any]) -> str:
    """The TensorBoard tag prefix of an RL row: evaluation rows ('eval', 'eval_fresh') are tagged
    ``<game>/<event>/<field>``, since the games evaluated after one block share their x (frames)
    and would otherwise be averaged into one meaningless scalar; every other row (train,
    diagnostics, switch: one game at a time) keeps ``<event>/<field>``, e.g.
    ``diagnostics/weight_norm/torso/conv_0``."""
    if row.get("event") in ("eval", "eval_fresh") and row.get("game"):
        return str(row["game"])
    return ""


def total_frames(segments: Sequence[Segment]) -> int:
    return sum(segment.total_frames for segment in segments)


def train_segments(
    run: Run, segments: Sequence[Segment], loop: Loop, chunk_frames: int
) -> RunResult:
    """Plays ``segments`` with ``loop`` inside the open harness ``run`` (module docstring), in
    chunks of ``chunk_frames`` frames. The result's outputs hold ``state`` (the sequence's final state when this call finished it) and
    ``evaluations`` (the 'eval' and 'eval_fresh' rows this call wrote).
    """
    restored = run.restore(
        lambda meta: loop.template(_saved_segment(segments, meta)),
        resume_row=lambda meta: _resume_row(segments, loop, meta),
    )
    if run.result.already_complete:
        if run.path is not None:
            run.result.outputs["summary"] = summary_lines(
                read_metrics(run.path), loop.matrix_keys[0]
            )
        return run.result
    position, state = Position(), None
    if restored is not None:
        meta = restored.metadata
        position = Position(int(meta["segment"]), int(meta["block"]), int(meta["iteration"]))
        state = loop.restored(restored.tree, meta.get("loop", {}))
    evaluations: list[dict[str, Any]] = []
    final_state = None
    for s in range(position.segment, len(segments)):
        segment = segments[s]
        start = position if s == position.segment else Position(s)
        if state is None or (start.block, start.iteration) == (0, 0):
            with run.phase("starting"):
                state = loop.init(segment)  # a segment starts from the seeds' initial networks
        for b in range(start.block, len(segment.blocks)):
            iteration = start.iteration if b == start.block else 0
            log = run.log if not segment.is_reference else _drop
            state, switch_rows = loop.start_block(run, state, segment, b, resumed=iteration > 0)
            log(switch_rows)
            try:
                for end in segment.chunk_ends(b, chunk_frames):
                    if end <= iteration:
                        continue
                    state, iteration = loop.run_chunk(run, state, segment, b, iteration, end, log)
                    if iteration == segment.plan.iterations[b]:  # the block is done
                        rows = loop.evaluate(run, state, segment, b)
                        rows += first_block_reference_rows(segment, b, rows)
                        run.log(rows)
                        evaluations += rows
                        _write_matrix(run, segments[0].blocks, loop.matrix_keys)
                    here = next_position(segments, Position(s, b, iteration))
                    finished = here.segment >= len(segments)
                    named = segments[here.segment].name if not finished else ""
                    run.save(
                        state,
                        {
                            **dataclasses.asdict(here),
                            "segment_name": named,
                            "loop": loop.metadata(),
                        },
                        done=frames_done(segments, here) if not finished else run.total,
                        params=loop.params(state),
                        step=segment.row("", b, iteration - 1, 0)["updates"],
                        finished=finished,
                        context=loop.where(segment, b),
                    )
                    if not finished and (run.result.preempted or run.stop_requested()):
                        return run.stop(state=None, evaluations=evaluations)
            finally:
                loop.end_block()
        if not segment.is_reference:
            final_state = state
        state = None
    rows = read_metrics(run.path) if run.path is not None else evaluations
    return run.finish(
        state=final_state,
        evaluations=evaluations,
        summary=summary_lines(rows, loop.matrix_keys[0]),
    )


def summary_lines(rows: Sequence[dict[str, Any]], key: str) -> list[str]:
    """'pong: visit_1 -2.00, visit_2 -1.00, fresh -2.00 (return_mean, mean over 3 seeds)' per
    game ('seed 0' for one): what a finished run prints, from its evaluation rows (of one run,
    or of a launch's runs of one variant, each a seed, as Atari's)."""
    evaluated = [r for r in rows if r.get("event") == "eval" and r.get("end_of_block")]
    scores = evaluation_matrix.visit_summary(
        evaluated, [r for r in rows if r.get("event") == "eval_fresh"], key
    )
    seeds = sorted({int(r["seed"]) for r in evaluated if "seed" in r})
    over = f"seed {seeds[0]}" if len(seeds) == 1 else f"mean over {len(seeds)} seeds"
    lines = []
    for game, columns in scores.items():
        cells = ", ".join(f"{name} {value:.2f}" for name, value in columns.items())
        lines.append(f"{game}: {cells} ({key}, {over})")
    return lines


def open_run(
    name: str,
    workdir: str | None,
    config,
    segments: Sequence[Segment],
    resume_free: Sequence[str],
    *,
    show_progress: bool | None = None,
    should_stop=None,
    stop_after_checkpoints: int | None = None,
    signal_name=None,
    independent: bool = False,
    label: str | None = None,
    defaults: Mapping[str, Any] | None = None,
    layout: str | None = None,
) -> Run:
    """The harness of an RL run (`plasticity.run.Run`): counted in frames, the config with its
    schedule and whether its intervention syncs the target recorded (``defaults``: the agent's
    preset, for configs written before a field existed; a work dir from before
    ``intervention.sync_target`` resumes only where it is off, as its runs had it), and a note
    when the budget would take more than a day. A variant's run has its own work dir, so the
    sweep's other variants and their order (`plasticity.workdir.SWEEP_FIELDS`, recorded for the
    report's order) may change at a relaunch: one arm resumed alone, arms reordered or added.
    So may ``games`` as typed ('Pong', 'pong'): the recorded schedule names each block's game
    canonically, so another game or order is still refused."""
    blocks = segments[0].blocks
    recorded = {**config.to_dict(), "schedule": [dataclasses.asdict(block) for block in blocks]}
    recorded["intervention"]["sync_target"] = syncs_target(config.intervention)  # as it runs
    if defaults is not None:  # a work dir from before the field: its runs never synced
        intervention = {**defaults.get("intervention", {}), "sync_target": False}
        defaults = {**defaults, "intervention": intervention}
    run = Run(
        name,
        workdir,
        recorded,
        total=total_frames(segments),
        unit="frame",
        x_key="frames",
        resume_free=(*resume_free, *SWEEP_FIELDS, "games"),
        keep_checkpoints=int(config.keep_checkpoints),
        show_progress=True if show_progress is None else show_progress,
        should_stop=should_stop,
        stop_after_checkpoints=stop_after_checkpoints,
        signal_name=signal_name,
        independent=independent,
        label=label,
        defaults=defaults,
        layout=layout,
        tag_prefix=tensorboard_prefix,
        budget_hint=(
            f"lower --frames_per_game (now {config.frames_per_game:,}) or --cycles (now "
            f"{config.cycles}) for a shorter run"
        ),
    )
    # The rate that decides it (and the ETA) is measured once learning runs, not while the
    # replay fills.
    plan = segments[0].plan
    run.budget_after = (plan.first_learning[0] + 1) * plan.frames_per_iteration + 2_048
    run.eta_waits_for_steady_pace = True
    return run


def _saved_segment(segments: Sequence[Segment], meta: dict[str, Any]) -> Segment:
    """The segment a checkpoint was written in; a ValueError (the checkpoint is set aside) when
    this run's plan has another segment at that position, e.g. after a change of the plan."""
    segment = segments[min(int(meta["segment"]), len(segments) - 1)]
    saved = meta.get("segment_name")
    if saved and int(meta["segment"]) < len(segments) and saved != segment.name:
        raise ValueError(f"written in segment {saved!r}, which this run plans as {segment.name!r}")
    return segment


def _resume_row(segments: Sequence[Segment], loop: Loop, meta: dict[str, Any]) -> dict[str, Any]:
    """The fields of the 'resume' row: where the run goes on (as every row: frames, updates,
    game, block, visit, seed), the segment, the block-relative iteration and the seeds."""
    position = Position(int(meta["segment"]), int(meta["block"]), int(meta["iteration"]))
    segment = segments[position.segment]
    seeds = [int(seed) for seed in loop.seeds]
    row = segment.row("resume", position.block, position.iteration - 1, seeds[0])
    return {**row, "segment": segment.name, "iteration": position.iteration, "seeds": seeds}


def _drop(rows) -> None:
    """A reference's training rows are not written: only its final scores are."""
    del rows


def latest_return(rows: Sequence[dict]) -> float | None:
    """The mean over seeds of each seed's last finite 'train' return among ``rows`` (None when
    no episode ended): what the progress bar shows of a chunk that logged several rows a seed."""
    latest = {
        row["seed"]: row["return_mean"]
        for row in rows
        if row["event"] == "train" and math.isfinite(row["return_mean"])
    }
    return float(np.mean(list(latest.values()))) if latest else None


def shown_return(value: float | None) -> str:
    """The progress bar's last return of the current game: '—' until one of its episodes ends
    (never a NaN, never the previous game's)."""
    return "—" if value is None else f"{value:.2f}"


def _write_matrix(run: Run, blocks, keys: Sequence[str]) -> None:
    if run.workdir is None or not run.workdir.is_writer:
        return
    run.workdir.flush()
    evaluation_matrix.write_evaluation_matrix(run.path, blocks, read_metrics(run.path), keys)
