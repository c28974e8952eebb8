"""The benchmarks define their absl flags only when run as programs.

Many of them share flag names (``--seeds``, ``--repeats``, ``--frames``, ...). Defined at import,
two of them imported by one test worker (or one script) fail with absl's DuplicateFlagError, as
the suite's collection once did. Each module defines its flags in ``define_flags()``, which its
``__main__`` block calls before ``app.run``.
"""

import importlib
import inspect
import json
import pkgutil
import subprocess
import sys

import pytest

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
    # Fourteen modules have flags; `benchmarks.reproduce` defines them in a FlagValues of its own.
    assert int(done.stdout.split()[-1]) == 14


def test_each_program_calls_define_flags_before_running():
    for name in MODULES:
        module = importlib.import_module(name)
        if not hasattr(module, "define_flags") or inspect.signature(module.define_flags).parameters:
            continue
        source = open(module.__file__).read()
        main_block = source[source.index('if __name__ == "__main__":') :]
        assert main_block.index("define_flags()") < main_block.index("timing.run_main"), name


def test_each_program_runs_through_the_shared_entry_point():
    """Every command line but reproduce's (a launcher of its own) and report's (which runs
    `scripts.report`) goes through `benchmarks.timing.run_main` or `one_line_errors`, so a bad
    setting is one line."""
    programs = []
    for name in MODULES:
        source = open(importlib.import_module(name).__file__).read()
        if 'if __name__ == "__main__":' not in source:
            continue
        if name in ("benchmarks.reproduce", "benchmarks.report"):
            continue
        programs.append(name)
        main_block = source[source.index('if __name__ == "__main__":') :]
        assert "timing.run_main(main" in main_block or "one_line_errors(main" in main_block, name
        assert "app.run(" not in main_block, name
    assert len(programs) == 13
    assert "benchmarks.replay_memory" in programs


def test_run_main_turns_a_value_error_into_one_line_and_status_1():
    fake = (
        "from benchmarks import timing\n"
        "def main(argv):\n"
        "    raise ValueError('--thing must be at least 1, got 0\\nsecond line')\n"
        "timing.run_main(main, 'fake')\n"
    )
    done = subprocess.run([sys.executable, "-c", fake], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert (
        done.stderr.strip().splitlines()[-1] == "benchmarks.fake: --thing must be at least 1, got 0"
    )


def test_run_main_logs_warnings_only_unless_verbosity_is_given():
    """JAX's start-up INFO lines (which backends it could not open) stay out of the figures, as
    in the launchers; ``--verbosity=0`` shows them."""
    fake = (
        "import sys\n"
        "from absl import logging\n"
        "from benchmarks import timing\n"
        "def main(argv):\n"
        "    logging.info('an info line')\n"
        "    logging.warning('a warning line')\n"
        "timing.run_main(main, 'fake')\n"
    )
    for extra, shown in (([], False), (["--verbosity=0"], True)):
        command = [sys.executable, "-c", fake, *extra]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "a warning line" in done.stderr and ("an info line" in done.stderr) == shown


# Counts that cannot be zero (each must refuse --flag=0), and counts where 0 means the preset's
# or "none" (each must take 0 and refuse -1), by module.
COUNT_FLAGS = {
    "atari_throughput": ["num_envs", "loop_frames", "classic_frames", "env_steps", "updates"],
    "continual_breakdown": ["seeds", "repeats"],
    "continual_throughput": ["seeds", "mlp_steps", "bit_steps", "loop_steps", "repeats"],
    "conv_in_loops": ["steps", "repeats"],
    "core_step_time": ["repeats", "steps"],
    "diagnostics_cost": ["steps", "every", "repeats", "probe_size", "seeds", "batch_size", "width"],
    "env_throughput": ["num_envs", "num_threads", "steps", "repeats", "learner_size"],
    "loop_breakdown": ["seeds", "frames", "repeats", "matmul_size"],
    "memory_growth": ["frames", "checkpoint_every_frames"],
    "minatar_throughput": ["num_envs", "frames", "repeats"],
    "peers": ["seeds", "repeats", "rounds"],
    "replay_memory": ["capacity", "batch_size", "calls"],
}
ZERO_ALLOWED = {
    "atari_throughput": ["top_ops"],
    "continual_breakdown": ["examples", "diagnostics_every"],
    "diagnostics_cost": ["frames", "every_frames"],
    "loop_breakdown": ["top_ops", "batch_size", "runs_per_batch"],
    "peers": ["steps", "examples", "runs_per_batch", "defer_dense_updates"],
}

# Defines each module's flags on the global FlagValues (as its __main__ block does), checks that
# every integer flag has a lower bound and how the listed ones take 0 and -1, then removes them.
BOUNDS = """
import importlib, json, sys
from absl import flags
counts, zero_allowed = json.loads(sys.argv[1]), json.loads(sys.argv[2])
problems = []

def refused(argument):
    try:
        flags.FLAGS(["benchmark", argument])
    except flags.IllegalFlagValueError:
        return True
    finally:
        flags.FLAGS.unparse_flags()
    return False

for name in sorted(set(counts) | set(zero_allowed)):
    module = importlib.import_module(f"benchmarks.{name}")
    before = set(flags.FLAGS)
    module.define_flags()
    added = set(flags.FLAGS) - before
    for flag in sorted(added):
        parser = flags.FLAGS[flag].parser
        if isinstance(parser, flags.IntegerParser) and parser.lower_bound is None:
            problems.append(f"{name} --{flag}: no lower bound")
    for flag in counts.get(name, []):
        if not refused(f"--{flag}=0"):
            problems.append(f"{name} --{flag}=0 taken")
    for flag in zero_allowed.get(name, []):
        if refused(f"--{flag}=0") or not refused(f"--{flag}=-1"):
            problems.append(f"{name} --{flag}: 0 refused or -1 taken")
    for flag in added:
        delattr(flags.FLAGS, flag)
print(json.dumps(problems))
"""


def test_count_flags_refuse_zero_and_zero_means_default_flags_refuse_negatives():
    done = subprocess.run(
        [sys.executable, "-c", BOUNDS, json.dumps(COUNT_FLAGS), json.dumps(ZERO_ALLOWED)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[-1]) == []


def test_minatar_throughput_refuses_unknown_presets_and_bad_seed_counts():
    from benchmarks import minatar_throughput

    assert minatar_throughput.check_lists(["dqn", "rainbow"], ["1", "8"]) == [1, 8]
    for agents, seeds, flag in (
        (["foo"], ["1"], "--agents"),
        (["rainbow_typo"], ["1"], "--agents"),
        (["dqn"], ["0"], "--seeds"),
        (["dqn"], ["x"], "--seeds"),
        (["dqn"], [], "--seeds"),
    ):
        with pytest.raises(ValueError, match=flag):
            minatar_throughput.check_lists(agents, seeds)


def test_reproduce_reads_a_space_separated_flag_value_as_the_flag_s():
    from benchmarks import reproduce

    claim, rest = reproduce.split_claim(
        ["reproduce", "label_reset", "--scale", "smoke", "--workdir", "/tmp/x", "--dry_run"]
    )
    assert claim == "label_reset"
    assert rest == ["reproduce", "--scale", "smoke", "--workdir", "/tmp/x", "--dry_run"]
    claim, _ = reproduce.split_claim(["reproduce", "--noprogress", "all", "--seeds", "2"])
    assert claim == "all"


def _one_line_error(module: str, *args: str) -> str:
    """The one line `python -m benchmarks.<module> ARGS` ends with (status 1, no traceback)."""
    done = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout[-1000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    return done.stderr.strip().splitlines()[-1]


def test_atari_throughput_refuses_a_one_env_loop_too_short_to_time_before_measuring():
    line = _one_line_error("atari_throughput", "--classic_frames=64")
    assert line.startswith("benchmarks.atari_throughput: --classic_frames must be at least 304")
    line = _one_line_error("atari_throughput", "--num_envs=4", "--loop_frames=256")
    assert line.startswith("benchmarks.atari_throughput: --loop_frames must be at least 1,024")


def test_memory_growth_stops_with_the_launcher_s_status_when_the_launch_fails():
    line = _one_line_error("memory_growth", "--frames=2000", "--checkpoint_every_frames=1500")
    assert line.startswith("train_minatar: error: checkpoint_every_frames (1500) must be")
