"""Published experiment configs for `scripts.train_continual` (ml_collections config files).

Each file defines ``get_config(arg=None)``; ``--config=benchmarks/configs/<file>.py`` gives the
default (laptop) scale, ``--config=benchmarks/configs/<file>.py:paper`` the paper's scale.
"""
