r"""Trains DQN or Rainbow on a MinAtar game sequence (gymnax); results land in a work dir.

  python -m scripts.train_minatar --games=breakout,space_invaders --cycles=2 \
      --frames_per_game=20000 --agent=rainbow --norm=layernorm --nap \
      --restart_schedule_at_switch --workdir=workdirs/minatar

  python -m scripts.train_minatar --experiment=benchmarks/configs/minatar_sequence.py \
      --workdir=workdirs/minatar_sequence   # every variant, each in <workdir>/<variant>

For MinAtar a frame is one environment step. A sequence plays every game with MinAtar's full
6-action set and observation planes padded to a common channel count; the whole loop (envs,
replay, learner, diagnostics, interventions) is one compiled ``lax.scan`` per chunk, seeds vmapped
on GPUs and TPUs and one at a time on CPUs (``--config.run.runs_per_batch``), spread over the
local devices (``--config.run.mesh``). After every block every game seen so
far is evaluated (``evaluation_matrix.json``), against a fresh network trained on each game after
the first alone (the first game's is the sequence's own first block; ``--nofresh_reference``
switches that off). The flags are the Atari launcher's
(`agents.launcher`); the run contract (resume, Ctrl-C / SIGTERM, divergence, exit statuses 0 / 1
/ 3) is every launcher's (`plasticity.launch`, `plasticity.run`).
"""

from __future__ import annotations


from plasticity import launch

NAME = "train_minatar"
FAMILY = "minatar"


def define_flags(values) -> None:
    # JAX loads with `agents`: inside the launch, where a Ctrl-C is held rather than raised.
    from agents import launcher  # noqa: PLC0415

    launcher.define_flags(values, FAMILY)


def run(context: launch.Launch):
    from agents import minatar_loop, launcher  # noqa: PLC0415

    return launcher.run(context, FAMILY, minatar_loop.train, minatar_loop.plan_run)


def help_config(values):
    """The config `--help` prints (the flags' config, no overrides)."""
    from agents import launcher  # noqa: PLC0415

    return launcher.config_of(values, {}, FAMILY)


def main(argv: list[str] | None = None) -> int:
    """Runs the launcher on ``argv`` (default: the command line); returns the exit status."""
    return launch.main(NAME, __doc__, define_flags, run, help_config, argv)


if __name__ == "__main__":
    launch.exit_after(main())
