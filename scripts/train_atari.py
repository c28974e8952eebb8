r"""Trains DQN or Rainbow on Atari games and game sequences from absl flags, into a work dir.

  python -m scripts.train_atari --games=Pong --agent=rainbow --workdir=workdirs/pong

  # NaP's sequential ALE: games played one after another, the list cycled
  python -m scripts.train_atari --games=Pong,Breakout,Enduro --frames_per_game=20000000 \
      --cycles=2 --agent=rainbow --norm=layernorm --nap --restart_schedule_at_switch \
      --workdir=workdirs/sequence

  # a published experiment: every variant, each in <workdir>/<variant>
  python -m scripts.train_atari --experiment=benchmarks/configs/atari_sequence.py:paper \
      --workdir=workdirs/nap_sequence

``--agent`` picks the preset of `agents.configs` (DQN Zoo's settings, counted in frames: one agent
step is 4 frames); ``--config.<field>=<value>`` overrides any field. Runs of several games use
the full 18-action set; at every switch the episodes in flight are cut and the switch flags
decide what else happens. After every game every game seen so far is evaluated
(``evaluation_matrix.json``; human-normalized too with uncut episodes), against a fresh network
trained on each game after the first alone for one block (the first game's is the sequence's own
first block; ``--nofresh_reference`` switches that off). An Atari run is one seed:
``--num_seeds=N`` runs N of them, each in ``<workdir>/seed_<s>``. The flags are the MinAtar
launcher's (`agents.launcher`); the run contract (resume, Ctrl-C / SIGTERM, divergence, exit
statuses 0 / 1 / 3) is every launcher's (`plasticity.launch`, `plasticity.run`).
"""

from __future__ import annotations


from plasticity import launch

NAME = "train_atari"
FAMILY = "atari"


def define_flags(values) -> None:
    # JAX loads with `agents`: inside the launch, where a Ctrl-C is held rather than raised.
    from agents import launcher  # noqa: PLC0415

    launcher.define_flags(values, FAMILY)


def run(context: launch.Launch):
    from agents import atari_loop, launcher  # noqa: PLC0415

    return launcher.run(context, FAMILY, atari_loop.train, atari_loop.plan_run)


def help_config(values):
    """The config `--help` prints (the flags' config, no overrides)."""
    from agents import launcher  # noqa: PLC0415

    return launcher.config_of(values, {}, FAMILY)


def main(argv: list[str] | None = None) -> int:
    """Runs the launcher on ``argv`` (default: the command line); returns the exit status."""
    return launch.main(NAME, __doc__, define_flags, run, help_config, argv)


if __name__ == "__main__":
    launch.exit_after(main())
