"""The benchmarks define their absl flags only when run as programs.

Many of them share flag names (``--seeds``, ``--repeats``, ``--frames``, ...). Defined at import,
two of them imported by one test worker (or one script) fail with absl's DuplicateFlagError, as
the suite's collection once did. Each module defines its flags in ``define_flags()``, which its
``__main__`` block calls before ``app.run``.
"""

import importlib
import inspect
import pkgutil
import subprocess
import sys

import benchmarks

MODULES = sorted(
    f"benchmarks.{info.name}"
    for info in pkgutil.iter_modules(benchmarks.__path__)
    if not info.ispkg
)

# Imports every benchmark module into one process (no flag may be defined on the way), then
# defines each module's flags, parses the defaults and removes them again, module by module.
CHECK = """
import importlib, inspect, sys
from absl import flags
names = sys.argv[1:]
modules = [importlib.import_module(name) for name in names]
defined = [m for m in flags.FLAGS.flags_by_module_dict() if m.startswith("benchmarks")]
assert not defined, f"flags defined at import by {defined}"
programs = 0
for module in modules:
    if not hasattr(module, "define_flags"):
        continue
    programs += 1
    if inspect.signature(module.define_flags).parameters:  # the launch harness's own FlagValues
        values = flags.FlagValues()
        module.define_flags(values)
        values(["benchmark"])
        continue
    before = set(flags.FLAGS)
    module.define_flags()
    added = set(flags.FLAGS) - before
    assert added, f"{module.__name__}.define_flags defined nothing"
    flags.FLAGS(["benchmark"])  # every default parses
    for name in added:
        delattr(flags.FLAGS, name)
    flags.FLAGS.unparse_flags()
print(programs)
"""


def test_every_benchmark_module_is_listed():
    assert "benchmarks.peers" in MODULES and "benchmarks.loop_breakdown" in MODULES
    assert len(MODULES) > 20


def test_benchmarks_import_together_and_define_their_flags_only_when_asked():
    done = subprocess.run(
        [sys.executable, "-c", CHECK, *MODULES], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    # Thirteen modules have flags; `benchmarks.reproduce` defines them in a FlagValues of its own.
    assert int(done.stdout.split()[-1]) == 13


def test_each_program_calls_define_flags_before_running():
    for name in MODULES:
        module = importlib.import_module(name)
        if not hasattr(module, "define_flags") or inspect.signature(module.define_flags).parameters:
            continue
        source = open(module.__file__).read()
        main_block = source[source.index('if __name__ == "__main__":') :]
        assert main_block.index("define_flags()") < main_block.index("app.run"), name
