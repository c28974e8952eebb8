r"""Resident memory of a long MinAtar run once its replay is full: flat, or growing?

  python -m benchmarks.memory_growth [--frames=1000000] [--checkpoint_every_frames=25000] \
      [--checkpoint_format=local|orbax]

Runs ``scripts.train_minatar`` in this process (DQN on Breakout, a 10,000-transition replay that
fills in the first 2% of the run, a checkpoint every ``--checkpoint_every_frames`` frames, rows
every 5,000, a work dir in a temporary directory) while a thread samples the process's resident
memory (VmRSS) every second. It prints the resident memory at each tenth of the run's wall time
and the growth between the peaks of two windows, 20-30% of the run (long after the replay filled
and every program compiled) and 85-95% (before the final evaluation); the target is at most 1%.

``--checkpoint_format=orbax`` saves every checkpoint with Orbax instead of the NumPy format a
single-process run uses: the comparison that shows where the growth came from (Orbax keeps host
memory per save; see `plasticity.checkpointing`).
"""

from __future__ import annotations

import tempfile
import threading
import time

from absl import flags

from benchmarks import timing


FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the benchmark's flags; called only when it runs as a program, so that importing
    it (the tests do) defines no global flags that could clash with another benchmark's."""
    flags.DEFINE_integer(
        "frames",
        1_000_000,
        "Environment steps of the run; a multiple of the loop's frames per iteration (8: 8 envs "
        "x 1 frame a step).",
        lower_bound=1,
    )
    flags.DEFINE_integer(
        "checkpoint_every_frames",
        25_000,
        "Checkpoint period (frames); must divide --frames and be a multiple of the loop's frames "
        "per iteration (8: 8 envs x 1 frame a step).",
        lower_bound=1,
    )
    flags.DEFINE_enum(
        "checkpoint_format", "local", ["local", "orbax"], "How each checkpoint is written."
    )


def resident_mib() -> float:
    """This process's resident set size in MiB (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class Sampler(threading.Thread):
    """Samples `resident_mib` every ``period`` seconds until stopped."""

    def __init__(self, period: float = 1.0):
        super().__init__(daemon=True)
        self.period, self.samples, self._stop_event = period, [], threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append((time.perf_counter(), resident_mib()))
            self._stop_event.wait(self.period)

    def stop(self) -> list[tuple[float, float]]:
        self._stop_event.set()
        self.join()
        return self.samples


def at_fraction(samples: list[tuple[float, float]], fraction: float) -> float:
    """The resident memory sampled closest to ``fraction`` of the sampled wall time."""
    start, end = samples[0][0], samples[-1][0]
    moment = start + fraction * (end - start)
    return min(samples, key=lambda sample: abs(sample[0] - moment))[1]


def peak_between(samples: list[tuple[float, float]], low: float, high: float) -> float:
    """The largest resident memory sampled between fractions ``low`` and ``high`` of the run."""
    start, end = samples[0][0], samples[-1][0]
    inside = [m for t, m in samples if low <= (t - start) / max(end - start, 1e-9) <= high]
    if not inside:
        raise ValueError(
            f"the run was too short to sample: {len(samples)} samples, one a second; raise --frames"
        )
    return max(inside)


def main(argv) -> None:
    del argv
    from plasticity import checkpointing, runtime  # noqa: PLC0415
    from scripts import train_minatar  # noqa: PLC0415

    if FLAGS.checkpoint_format == "orbax":  # every save through Orbax, as before the NumPy format
        checkpointing.is_local_format = lambda directory: False
    with tempfile.TemporaryDirectory() as workdir:
        sampler = Sampler()
        sampler.start()
        started = time.perf_counter()
        status = train_minatar.main(
            [
                "train_minatar",
                "--games=breakout",
                "--agent=dqn",
                f"--frames_per_game={FLAGS.frames}",
                "--nofresh_reference",
                "--noprogress",
                "--config.replay.capacity=10000",
                f"--config.checkpoint_every_frames={FLAGS.checkpoint_every_frames}",
                "--config.log_every_frames=5000",
                f"--workdir={workdir}",
            ]
        )
        seconds = time.perf_counter() - started
        samples = sampler.stop()
    if status:  # the launcher printed its error: nothing to measure
        raise SystemExit(status)
    print(runtime.hardware_line())
    tenths = [at_fraction(samples, k / 10) for k in range(11)]
    # Peaks of two windows, the later one before the final evaluation and teardown.
    quarter, end = peak_between(samples, 0.2, 0.3), peak_between(samples, 0.85, 0.95)
    print(
        f"memory_growth: {FLAGS.frames:,} frames in {seconds:.0f} s, a checkpoint every "
        f"{FLAGS.checkpoint_every_frames:,} frames ({FLAGS.checkpoint_format} format)"
    )
    print("resident MiB at each tenth of the run: " + " ".join(f"{v:.0f}" for v in tenths))
    growth = (end - quarter) / quarter
    print(
        f"growth, peak over 20-30% of the run -> peak over 85-95%: {quarter:.0f} -> {end:.0f} MiB "
        f"({growth:+.2%}; target <= +1%)"
    )


if __name__ == "__main__":
    define_flags()
    timing.run_main(main, "memory_growth")
