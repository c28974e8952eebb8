"""Published experiment configs of every launcher (Python config files, one sweep format).

Each file defines ``get_config(arg=None)``; ``--experiment=benchmarks/configs/<file>.py`` gives its
default (laptop CPU) scale, ``:smoke`` a check of the plumbing (about a minute on 2 cores, two for a
file of many arms) and ``:paper`` the paper's scale (a GPU job). Files with several variants also
take variant names (``:paper,rainbow_ln``) to run only those. The file's docstring states the
command, the expected runtime and the measured result.
"""
