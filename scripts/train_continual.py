r"""Runs a continual-learning sweep (variants × hyper-parameter grid × seeds) into a work dir.

  python -m scripts.train_continual --config=benchmarks/configs/nap_label_reset.py \
      --workdir=/tmp/nap --config.num_seeds=2 --config.task.num_tasks=10

Relaunching the same command on the same work dir resumes from its last checkpoint. Bad input
(unknown task, NaP without a norm, missing dataset files, ...) stops with a one-line error and
exit status 1.

Scale-out and safety (see BUILD_NOTES.md for pod and multi-GPU launches):

* ``--mesh=seed:8`` (or ``auto``, the default: ``config.mesh``) spreads the runs over devices;
  results do not depend on it, so a relaunch may change it.
* ``--coordinator_address=host:port --num_processes=N --process_id=i`` (or ``--distributed`` to
  read them from the cluster environment: TPU pod slice, SLURM, Open MPI) joins a multi-process
  job; every process runs the same command, process 0 writes the work dir.
* SIGTERM finishes the current chunk of tasks, writes its checkpoint and exits with status 0
  (relaunch to resume).
* A NaN/Inf loss or parameter norm stops the run with a one-line error naming the step, the
  metric and the run, exit status 3; the last good checkpoint stays the newest one.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from plasticity import distributed

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Python config file (benchmarks/configs/<name>.py[:paper]).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Work dir (created; resumed when it exists).")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "Directory with dataset files; overrides --config.data.data_dir."
)
_MAX_CHUNKS = flags.DEFINE_integer(
    "max_chunks", None, "Stop after this many chunks of tasks (resume later with the same command)."
)
_MESH = flags.DEFINE_string(
    "mesh", None, "Device mesh, e.g. 'seed:8' or 'auto'; overrides --config.mesh."
)
distributed.define_flags()

ERROR_EXIT_CODE = 1


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if _CONFIG.value is None or not _WORKDIR.value:
        raise app.UsageError("--config and --workdir are required")
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
    try:
        distributed.initialize_from_flags()  # first: before anything runs on a device
    except ValueError as error:
        print(f"train_continual: error: {error}", file=sys.stderr)
        return ERROR_EXIT_CODE
    from benchmarks import continual  # after flag parsing: imports JAX
    from plasticity import divergence, preemption, runtime

    runtime.apply_runtime_defaults()

    config = _CONFIG.value
    with config.unlocked():
        if _DATA_DIR.value is not None:
            config.data.data_dir = _DATA_DIR.value
        if _MESH.value is not None:
            config.mesh = _MESH.value
    try:
        with preemption.PreemptionGuard() as guard:
            result = continual.run_experiment(
                config, _WORKDIR.value, max_chunks=_MAX_CHUNKS.value, should_stop=guard.should_stop
            )
    except ValueError as error:  # bad input: one line, no traceback
        print(f"train_continual: error: {error}", file=sys.stderr)
        return ERROR_EXIT_CODE
    except divergence.DivergenceError as error:
        print(f"train_continual: error: {error}", file=sys.stderr)
        return divergence.DIVERGENCE_EXIT_CODE
    if result.completed:
        state = "complete"
    elif result.preempted:
        signal_name = guard.signal_name or "a signal to another process"
        state = f"stopped by {signal_name} after a checkpoint (relaunch to resume)"
    else:
        state = "stopped (relaunch to resume)"
    print(f"train_continual: {state}; work dir {result.workdir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
