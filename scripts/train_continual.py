r"""Runs a continual-learning sweep (variants × hyper-parameter grid × seeds) into a work dir.

  python -m scripts.train_continual --config=benchmarks/configs/nap_label_reset.py \
      --workdir=/tmp/nap --config.num_seeds=2 --config.task.num_tasks=10

Relaunching the same command on the same work dir resumes from its last checkpoint. Bad input
(unknown task, NaP without a norm, missing dataset files, ...) stops with a one-line error and
exit status 1.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Python config file (benchmarks/configs/<name>.py[:paper]).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Work dir (created; resumed when it exists).")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "Directory with dataset files; overrides --config.data.data_dir.")
_MAX_CHUNKS = flags.DEFINE_integer(
    "max_chunks", None, "Stop after this many chunks of tasks (resume later with the same command).")


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if _CONFIG.value is None or not _WORKDIR.value:
    raise app.UsageError("--config and --workdir are required")
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
  from benchmarks import continual  # after flag parsing: imports JAX
  from plasticity import runtime

  runtime.apply_runtime_defaults()

  config = _CONFIG.value
  if _DATA_DIR.value is not None:
    with config.unlocked():
      config.data.data_dir = _DATA_DIR.value
  try:
    result = continual.run_experiment(config, _WORKDIR.value, max_chunks=_MAX_CHUNKS.value)
  except ValueError as error:  # bad input: one line, no traceback
    print(f"train_continual: error: {error}", file=sys.stderr)
    return 1
  state = "complete" if result.completed else "stopped (relaunch to resume)"
  print(f"train_continual: {state}; work dir {result.workdir}", file=sys.stderr)
  return 0


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
