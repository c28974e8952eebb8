"""Suite-wide settings.

Threefry random bits are generated with the non-partitionable layout in tests: on XLA:CPU it cuts
the compile time of parameter initialisation several-fold (ResNet init 11 s → 2 s here). Random
values change, not the logic under test; launchers keep JAX's default.
"""

import jax

jax.config.update("jax_threefry_partitionable", False)
