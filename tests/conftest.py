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
