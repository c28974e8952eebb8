"""Suite-wide settings.

* Threefry random bits use the non-partitionable layout, as the launchers do
  (`plasticity.runtime`): on XLA:CPU it cuts the compile time of parameter initialisation
  several-fold (ResNet init 11 s → 2 s here).
* The test process has one CPU device, whatever test first starts JAX: a launcher called in
  process would otherwise split the CPU into one device per core (`runtime.use_cpu_devices`)
  for every later test. Launchers started as subprocesses keep their own default; tests that
  want several devices set ``XLA_FLAGS`` for a subprocess.
* Each test process compiles into its own fresh persistent compilation cache, removed at exit:
  many tests run the same tiny program twice (a reference run beside an interrupted and resumed
  one), and a second compile of the same program is then a cache read. Nothing carries over
  between suite runs, so no stale executable can reach a test.
* Test files are handed to the two workers heaviest first (`HEAVIEST_FIRST`), so that neither
  is left alone with a long file at the end.
"""

import atexit
import os
import shutil
import tempfile

import jax

jax.config.update("jax_threefry_partitionable", False)
_COMPILATION_CACHE = tempfile.mkdtemp(prefix="plasticity-tests-jax-cache-")
atexit.register(shutil.rmtree, _COMPILATION_CACHE, ignore_errors=True)
jax.config.update("jax_compilation_cache_dir", _COMPILATION_CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
if "JAX_NUM_CPU_DEVICES" not in os.environ:
    jax.config.update("jax_num_cpu_devices", 1)

# The files that took longest on 2 cores (`python -m pytest --durations=0`: each 50–260 worker
# seconds, varying with what runs beside them; together over half of the suite), longest first. xdist hands whole files to the workers in
# collection order (`--no-loadscope-reorder`), so these go out first and the short files fill in
# after them. Only the schedule depends on this list: a stale entry costs minutes, never a result.
HEAVIEST_FIRST = (
    "tests/scripts/test_run_contract.py",
    "tests/agents/test_rl_interventions.py",
    "tests/benchmarks/test_continual.py",
    "tests/scripts/test_minatar_resume.py",
    "tests/agents/test_minatar_loop.py",
    "tests/agents/test_atari_safety.py",
    "tests/scripts/test_report.py",
    "tests/scripts/test_train_continual.py",
    "tests/scripts/test_rl_multiprocess.py",
    "tests/scripts/test_resume.py",
    "tests/plasticity/test_networks.py",
    "tests/plasticity/test_nap.py",
)


def pytest_collection_modifyitems(config, items):
    """Moves the `HEAVIEST_FIRST` files to the front, in that order; the rest keep theirs."""
    rank = {path: i for i, path in enumerate(HEAVIEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))
