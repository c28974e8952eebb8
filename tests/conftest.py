"""Suite-wide settings.

* Threefry random bits use the non-partitionable layout, as the launchers do
  (`plasticity.runtime`): on XLA:CPU it cuts the compile time of parameter initialisation
  several-fold (ResNet init 11 s → 2 s here).
* The test process has one CPU device, whatever test first starts JAX: a launcher called in
  process would otherwise split the CPU into one device per core (`runtime.use_cpu_devices`)
  for every later test. Launchers started as subprocesses keep their own default; tests that
  want several devices set ``XLA_FLAGS`` for a subprocess.
"""

import os

import jax

jax.config.update("jax_threefry_partitionable", False)
if "JAX_NUM_CPU_DEVICES" not in os.environ:
    jax.config.update("jax_num_cpu_devices", 1)
