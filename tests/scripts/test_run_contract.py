"""The run contract, the same for every launcher (continual, MinAtar, Atari), tested on each.

* Ctrl-C (SIGINT) behaves like SIGTERM: the run finishes its step, checkpoints, prints one line
  and exits 0 (a second Ctrl-C kills at once: `tests/plasticity/test_preemption.py`).
* A relaunch prints where it resumes; a truncated newest checkpoint gets one warning line and the
  run goes on from the newest intact one, with no 'resume' row for the broken one.
* A launch killed before its first checkpoint leaves nothing that blocks a corrected relaunch.
* A relaunch of a finished run says so and trains nothing; a metrics file shorter than its
  checkpoint is refused with one line naming it.
* Bad input is one line and exit status 1, with nothing written: an unknown ``--config.`` field
  (naming the closest one), a bad config file or argument, a work dir that is a file or not
  writable, an empty or corrupt ``config.json``, sizes that cannot fit in memory, a learning
  start that is never reached.
* Every work dir holds ``run_info.json``.

Runs are subprocesses (real signals) sharing a JAX compilation cache; bad input is tested in this
process through each script's ``main`` (nothing is compiled).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from plasticity import launch
from plasticity import workdir as workdir_lib
from scripts import train_atari, train_continual, train_minatar
from tests.ports import free_port
from tests.scripts import test_resume

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 300
TINY_MINATAR_NET = [
    "--agent=dqn",
    "--num_envs=2",
    "--nofresh_reference",
    "--noprogress",
    "--config.network.conv_layers=((4, 3, 2),)",
    "--config.network.hidden_sizes=(16,)",
    "--config.replay.capacity=1024",
    "--config.replay.min_fill_fraction=0.0625",
    "--config.evaluation.episodes=1",
    "--config.evaluation.max_frames=500",
    "--config.log_every_frames=256",
    "--config.checkpoint_every_frames=256",
]
TINY_ATARI_NET = [
    "--agent=dqn",
    "--num_envs=2",
    "--nofresh_reference",
    "--noprogress",
    "--config.network.torso=conv",
    "--config.network.conv_layers=((8, 8, 4), (8, 4, 2))",
    "--config.network.hidden_sizes=(32,)",
    "--config.replay.capacity=512",
    "--config.replay.min_fill_fraction=0.0625",
    "--config.evaluation.episodes=1",
    "--config.evaluation.max_frames=160",
    "--config.log_every_frames=256",
    "--config.checkpoint_every_frames=256",
]
# name -> (script, unit, a long run's flags, a short run's flags, flags with other results)
LAUNCHERS = {
    "train_continual": (
        train_continual,
        "step",
        [
            "--experiment=benchmarks/configs/nap_label_reset.py:smoke",
            "--config.variant_order=('no_norm',)",
            "--num_seeds=1",
            "--noprogress",
            "--config.task.num_tasks=400",
        ],
        [
            "--experiment=benchmarks/configs/nap_label_reset.py:smoke",
            "--config.variant_order=('no_norm',)",
            "--num_seeds=1",
            "--noprogress",
        ],
        ["--seed=1"],
    ),
    "train_minatar": (
        train_minatar,
        "frame",
        ["--games=breakout", "--frames_per_game=51200", *TINY_MINATAR_NET],
        ["--games=breakout", "--frames_per_game=512", *TINY_MINATAR_NET],
        ["--seed=1"],
    ),
    "train_atari": (
        train_atari,
        "frame",
        ["--games=Pong", "--frames_per_game=25600", *TINY_ATARI_NET],
        ["--games=Pong", "--frames_per_game=512", *TINY_ATARI_NET],
        ["--seed=1"],
    ),
}
EXPERIMENTS = {
    "train_continual": "benchmarks/configs/nap_label_reset.py",
    "train_minatar": "benchmarks/configs/minatar_sequence.py",
    "train_atari": "benchmarks/configs/atari_sequence.py",
}
UNKNOWN_FIELD = {
    "train_continual": ("--config.task.num_task=3", "task.num_tasks"),
    "train_minatar": ("--config.replay.capasity=3", "replay.capacity"),
    "train_atari": ("--config.replay.capasity=3", "replay.capacity"),
}
TOO_BIG = {
    "train_continual": ["--num_seeds=100000000"],
    "train_minatar": ["--num_seeds=1000000"],
    "train_atari": ["--config.replay.capacity=100000000", "--config.replay.min_fill_fraction=1e-7"],
}


def start(name: str, args: list[str], workdir: Path, cache: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }
    env.pop("XLA_FLAGS", None)
    return subprocess.Popen(
        [sys.executable, "-m", f"scripts.{name}", *args, f"--workdir={workdir}"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen) -> tuple[int, str]:
    return test_resume.finish(process, TIMEOUT)


def checkpoints(workdir: Path) -> list[int]:
    directory = workdir / "checkpoints"
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def wait_for(process: subprocess.Popen, ready) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not ready():
        if process.poll() is not None:
            raise AssertionError(f"the run ended early: {process.stderr.read()[-3000:]}")
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def lines_of(stderr: str, name: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(f"{name}:")]


def truncate_tree(checkpoint: Path) -> None:
    """Cuts every array file of a checkpoint in half, as a crash of the file system would
    (``tree.npz`` of a single-process run, or the files of an Orbax ``tree`` directory)."""
    for path in [*(checkpoint / "tree").rglob("*"), checkpoint / "tree.npz"]:
        if path.is_file() and path.stat().st_size > 64:
            with open(path, "r+b") as f:
                f.truncate(path.stat().st_size // 2)


@pytest.fixture(scope="module", params=list(LAUNCHERS))
def contract(request, tmp_path_factory):
    """Every run of the contract for one launcher (see the module docstring)."""
    name = request.param
    _, unit, long_args, short_args, other = LAUNCHERS[name]
    root = tmp_path_factory.mktemp(name)
    cache = root / "compilation_cache"
    out = {"name": name, "unit": unit, "root": root}
    started = []
    try:
        # A long run stopped by Ctrl-C once it has a checkpoint.
        interrupted = root / "interrupted"
        process = start(name, long_args, interrupted, cache)
        started.append(process)
        wait_for(process, lambda: checkpoints(interrupted))
        out["first_checkpoint"] = checkpoints(interrupted)[0]
        process.send_signal(signal.SIGINT)
        out["interrupted"] = finish(process)
        out["after_interrupt"] = checkpoints(interrupted)
        # Its relaunch resumes; then its newest checkpoint is damaged and the next relaunch falls
        # back to the one before it.
        out["resumed"] = finish(
            start(name, [*long_args, "--stop_after_checkpoints=2"], interrupted, cache)
        )
        out["after_resume"] = checkpoints(interrupted)
        truncate_tree(interrupted / "checkpoints" / str(out["after_resume"][-1]))
        out["fallback"] = finish(
            start(name, [*long_args, "--stop_after_checkpoints=1"], interrupted, cache)
        )
        out["after_fallback"] = checkpoints(interrupted)
        out["interrupted_rows"] = workdir_lib.read_metrics(interrupted)
        # A launch killed before its first checkpoint, then the corrected command to the end,
        # then a relaunch of the finished run.
        corrected = root / "corrected"
        process = start(name, [*short_args, *other], corrected, cache)
        started.append(process)
        wait_for(process, lambda: (corrected / "config.json").exists())
        process.kill()
        out["killed"] = finish(process)
        out["killed_checkpoints"] = checkpoints(corrected)
        out["completed"] = finish(start(name, short_args, corrected, cache))
        out["completed_rows"] = (corrected / "metrics.jsonl").read_bytes()
        out["again"] = finish(start(name, short_args, corrected, cache))
        out["again_rows"] = (corrected / "metrics.jsonl").read_bytes()
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
                process.communicate()
    return out


def test_ctrl_c_finishes_the_step_checkpoints_and_exits_zero_with_one_line(contract):
    name, unit = contract["name"], contract["unit"]
    code, stderr = contract["interrupted"]
    assert code == 0, stderr[-3000:]
    assert "Traceback" not in stderr
    acknowledged, line = lines_of(stderr, name)  # at once, then where it stopped
    assert acknowledged == (
        f"{name}: SIGINT received: stopping after the next checkpoint (a second one stops at once)"
    )
    assert line.startswith(f"{name}: stopped by SIGINT after a checkpoint at {unit} ")
    assert "(relaunch to resume)" in line
    assert contract["after_interrupt"][-1] >= contract["first_checkpoint"]


def test_a_relaunch_says_where_it_resumes(contract):
    name, unit = contract["name"], contract["unit"]
    code, stderr = contract["resumed"]
    assert code == 0, stderr[-3000:]
    newest = contract["after_interrupt"][-1]
    assert (
        lines_of(stderr, name)[0]
        == f"{name}: resuming from {unit} {newest:,} (checkpoint {newest})"
    )


def test_a_truncated_newest_checkpoint_falls_back_to_the_one_before(contract):
    name, unit = contract["name"], contract["unit"]
    code, stderr = contract["fallback"]
    assert code == 0, stderr[-3000:]
    broken, intact = contract["after_resume"][-1], contract["after_resume"][-2]
    warning, resuming, stopped = lines_of(stderr, name)
    assert warning.startswith(f"{name}: warning: checkpoint {broken} cannot be loaded (")
    assert warning.endswith("trying an older one")
    assert resuming == f"{name}: resuming from {unit} {intact:,} (checkpoint {intact})"
    assert stopped.startswith(f"{name}: stopped after a checkpoint at {unit} ")
    assert (contract["root"] / "interrupted" / "corrupt_checkpoints" / str(broken)).is_dir()
    resumes = [
        row["checkpoint"] for row in contract["interrupted_rows"] if row["event"] == "resume"
    ]
    assert resumes == [contract["after_interrupt"][-1], intact]  # none for the broken one


def test_a_launch_killed_before_its_first_checkpoint_does_not_block_the_corrected_one(contract):
    assert contract["killed_checkpoints"] == []
    code, stderr = contract["completed"]
    assert code == 0, stderr[-3000:]
    assert lines_of(stderr, contract["name"])[-1].startswith(f"{contract['name']}: complete (")
    config = json.loads((contract["root"] / "corrected" / "config.json").read_text())
    assert config["seed"] == 0  # the corrected command's config replaced the killed one's


def test_a_relaunch_of_a_finished_run_trains_nothing(contract):
    name = contract["name"]
    code, stderr = contract["again"]
    assert code == 0, stderr[-3000:]
    (line,) = lines_of(stderr, name)
    assert line.startswith(f"{name}: already complete (")
    assert contract["again_rows"] == contract["completed_rows"]


def test_a_metrics_file_shorter_than_its_checkpoint_is_refused(contract, capsys):
    name = contract["name"]
    script, _, _, short_args, _ = LAUNCHERS[name]
    workdir = contract["root"] / "corrected"
    metrics = workdir / "metrics.jsonl"
    kept = metrics.read_bytes()
    metrics.write_bytes(kept[:10])
    try:
        assert script.main([name, *short_args, f"--workdir={workdir}"]) == 1
    finally:
        metrics.write_bytes(kept)
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"{name}: error: {metrics} is shorter (10 bytes) than checkpoint ")
    # As long as recorded but damaged inside: refused in one line, before anything trains.
    metrics.write_bytes(kept[:5] + b"@@@@" + kept[9:])
    try:
        assert script.main([name, *short_args, f"--workdir={workdir}"]) == 1
    finally:
        metrics.write_bytes(kept)
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"{name}: error: {metrics}: line 1 is not a JSON row (")


def test_every_work_dir_records_its_launches(contract):
    info = json.loads((contract["root"] / "interrupted" / "run_info.json").read_text())
    assert len(info["launches"]) == 3  # the interrupted launch and two relaunches
    first = info["launches"][0]
    assert first["command"][1:3] == ["-m", f"scripts.{contract['name']}"]  # as it was typed
    assert first["cwd"] == str(REPO)  # where its relative paths lead
    assert {"jax", "flax", "optax", "orbax-checkpoint"} <= set(first["packages"])
    assert first["devices"] and first["cpu"]["cores"] >= 1 and first["backend"] == "cpu"
    assert "git_commit" in first


# Bad input: one line, exit status 1, nothing written ---------------------------------------------


def bad_input(name: str, args: list[str], workdir: Path, capsys) -> str:
    script, *_ = LAUNCHERS[name]
    status = script.main([name, *args, f"--workdir={workdir}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1, err
    (line,) = err
    assert line.startswith(f"{name}: error: ")
    return line[len(f"{name}: error: ") :]


def short(name: str) -> list[str]:
    return LAUNCHERS[name][3]


@pytest.mark.parametrize("name", list(LAUNCHERS))
def test_bad_config_input_is_one_line_and_writes_nothing(name, tmp_path, capsys):
    workdir = tmp_path / "run"
    flag, closest = UNKNOWN_FIELD[name]
    message = bad_input(name, [*short(name), flag], workdir, capsys)
    assert message.startswith("unknown config field") and f"(did you mean {closest}?)" in message
    message = bad_input(name, ["--experiment=benchmarks/configs/nope.py"], workdir, capsys)
    assert "no Python config file benchmarks/configs/nope.py" in message
    message = bad_input(name, [f"--experiment={EXPERIMENTS[name]}:huge"], workdir, capsys)
    assert "unknown config argument 'huge'; accepted: smoke, default, paper" in message
    message = bad_input(name, [*short(name), *TOO_BIG[name]], workdir, capsys)
    assert "do not fit in memory" in message
    message = bad_input(name, [*short(name), "--cpu_devices=zero"], workdir, capsys)
    assert message == "--cpu_devices='zero': expected auto or a positive integer"
    message = bad_input(name, [*short(name), "--stop_after_checkpoints=0"], workdir, capsys)
    assert message == "flag --stop_after_checkpoints=0: 0 is not a positive integer"
    assert not workdir.exists()


def test_an_unknown_choice_of_cpu_products_is_one_line_and_writes_nothing(tmp_path, capsys):
    workdir = tmp_path / "run"
    args = [*short("train_minatar"), "--config.run.cpu_products=mkl"]
    message = bad_input("train_minatar", args, workdir, capsys)
    assert message == "run.cpu_products='mkl': expected one of auto, xla, ynnpack"
    assert not workdir.exists()


# Settings that only fail once something is built: a one-line error before anything is written.
RESET_EVERY_BLOCK = (
    "--config.intervention.name=reset_last_layers",
    "--config.intervention.at_switch=true",
)
# A flag, or flags given together, and the one-line error they give.
UNBUILDABLE = {
    "train_continual": [
        ("--config.network.hidden_sizes=(0,)", "network.hidden_sizes must be a sequence of"),
        ("--config.network.hidden_sizes=(-3,)", "network.hidden_sizes must be a sequence of"),
        ("--config.run.tasks_per_chunk=-1", "run.tasks_per_chunk must be >= 0, got -1"),
        ("--experiment=benchmarks/configs/atari_sequence.py:smoke", "is not a continual config"),
        ("--weight_decay=nan", "optimizer.weight_decay must be a number >= 0, got nan"),
        (
            ("--config.network.name=cnn", "--config.network.channels=(0,)"),
            "network.channels must be a sequence of positive integers, got (0,)",
        ),
        (
            ("--config.network.name=resnet", "--config.network.width=0"),
            "network.width must be a positive integer, got 0",
        ),
        ("--config.optimizer.max_grad_norm=-1", "optimizer.max_grad_norm must be a number >= 0"),
        (
            (
                "--config.intervention.name=redo",
                "--config.intervention.every=4",
                "--config.intervention.options.taux=0.1",
            ),
            "intervention 'redo' has no option 'taux': it takes tau, norm_recycling",
        ),
        (
            ("--config.network.name=cnn", "--config.network.channels=(4,4,4,4,4,4)"),
            "network.channels: 6 conv + 2×2 max-pool layers halve the 8×8 input below one pixel;"
            " at most 3 fit",
        ),
        ("--config.grid.l2=(1e-4,1e-4)", "grid.l2 lists a value twice, got (0.0001, 0.0001)"),
        (("--seed=3", "--config.seed=4"), "--seed and --config.seed both set seed; give it once"),
        (
            "--config.grid.weight_decay=('a',)",
            "grid.weight_decay must be a sequence of numbers, got ('a',)",
        ),
    ],
    "train_minatar": [
        ("--config.network.hidden_sizes=(0,)", "network.hidden_sizes must be a sequence of"),
        ("--config.network.hidden_sizes=(16.5,)", "network.hidden_sizes must be a sequence of"),
        ("--config.network.conv_layers=(4,3,2)", "network.conv_layers must be (features, kernel"),
        ("--config.network.conv_layers=((4,3,0),)", "network.conv_layers must be a sequence of"),
        (
            ("--norm=layernorm", "--config.network.norm=rmsnorm"),
            "--norm and --config.network.norm both set network.norm; give it once",
        ),
        (
            "--config.network.conv_layers=((4,12,1),)",
            "network.conv_layers needs an input of at least 12×12, got 10×10 (layer 0's 12×12",
        ),
        ("--config.optimizer.name=foo", "unknown optimizer 'foo'; known: sgd, momentum, adam"),
        ("--config.diagnostics.names=('bogus',)", "Unknown diagnostics ['bogus']"),
        ("--config.diagnostics.batch_size=0", "diagnostics.batch_size must be >= 1, got 0"),
        (
            (*RESET_EVERY_BLOCK, "--config.intervention.options.num_layerz=1"),
            "intervention 'reset_last_layers' has no option 'num_layerz': it takes num_layers,",
        ),
        (
            (*RESET_EVERY_BLOCK, "--config.intervention.options.num_layers=0"),
            "num_layers must be >= 1",
        ),
        ("--config.network.widthz=3", "unknown config field 'network.widthz'"),
        ("--config.network.initialization=xavier", "Unknown initialization 'xavier': expected"),
        ("--experiment=benchmarks/configs/atari_sequence.py:smoke", "is not a MinAtar config"),
        ("--config.optimizer.learning_rate=-1", "learning_rate must be a number > 0, got -1"),
        (
            "--config.optimizer.rmsprop_decay=1",
            "optimizer.rmsprop_decay must be a number >= 0 and <",
        ),
        ("--config.evaluation.epsilon=2", "evaluation.epsilon must be a number >= 0 and <= 1"),
        ("--config.replay.priority_exponent=-0.5", "replay.priority_exponent must be a number >="),
        ("--config.learner.target_update_period_frames=0", "target_update_period_frames must"),
        (
            ("--nap", "--norm=layernorm", "--config.optimizer.nap.gamma_beta_elsewhere=bogus"),
            "optimizer.nap.gamma_beta_elsewhere='bogus': expected one of free, regularize",
        ),
        (
            (
                "--config.optimizer.schedule.name=warmup_cosine",
                "--config.optimizer.schedule.warmup_steps=9999",
            ),
            "optimizer.schedule (warmup_cosine): total_steps",
        ),
        (
            ("--restart_schedule_at_switch", "--config.optimizer.schedule.name=linear"),
            "leave optimizer.schedule.name 'constant', got 'linear'",
        ),
        (("--nap", "--norm=layernorm", "--config.optimizer.nap.period=0"), "nap.period must be"),
        ("--config.diagnostics.options.srank_deltaa=0.1", "Unknown diagnostics options ['srank_"),
        (
            (
                "--config.intervention.name=cbp",
                "--config.intervention.every_frames=256",
                "--config.intervention.options.replacement_rate=2",
            ),
            "replacement_rate must be in [0, 1], got 2",
        ),
    ],
    "train_atari": [
        (
            (
                "--config.intervention.name=redo",
                "--config.intervention.at_switch=true",
                "--config.intervention.options.tau=-1",
            ),
            "ReDo threshold tau must be >= 0, got -1.",
        ),
        ("--config.env.max_episode_frames=401", "env.max_episode_frames (401) must be a multiple"),
        (
            ("--config.switch.flush_replay=true", "--noflush_replay_at_switch"),
            "--flush_replay_at_switch and --config.switch.flush_replay both set "
            "switch.flush_replay",
        ),
        (
            "--config.env.screen_size=16",
            "network.conv_layers needs an input of at least 20×20, got 16×16 (layer 1's 4×4 kernel"
            " meets a 3×3 map)",
        ),
        (
            ("--config.network.torso=nature", "--config.env.screen_size=10"),
            "the nature torso needs an input of at least 36×36, got 10×10",
        ),
        ("--config.network.hidden_sizes=(0,)", "network.hidden_sizes must be a sequence of"),
        ("--config.optimizer.name=foo", "unknown optimizer 'foo'; known: sgd, momentum, adam"),
        ("--experiment=benchmarks/configs/minatar_sequence.py:smoke", "is not an Atari config"),
        ("--config.env.noop_max=-1", "noop_max must be an integer >= 0, got -1"),
        ("--config.evaluation.num_envs=0", "evaluation.num_envs must be >= 1, got 0"),
        ("--weight_decay=-0.1", "optimizer.weight_decay must be a number >= 0, got -0.1"),
        ("--config.optimizer.eps=-1e-8", "optimizer.eps must be a number >= 0, got -1e-08"),
        ("--config.learner.priority_max=0", "learner.priority_max must be a number > 0, got 0"),
        (
            ("--agent=rainbow", "--config.network.noisy=False"),
            "network.noisy=False with exploration.epsilon_begin = epsilon_end = 0: nothing",
        ),
    ],
}


def test_every_run_of_a_launch_is_planned_before_the_first_trains(tmp_path, capsys):
    """A variant whose plan fails (its restarted schedule's warm-up outlasts its blocks) stops the
    launch before the variant before it trains, not after."""
    args = [
        "--experiment=benchmarks/configs/minatar_sequence.py:smoke,rainbow,rainbow_ln_nap",
        "--config.optimizer.schedule.warmup_steps=200",
    ]
    message = bad_input("train_minatar", args, tmp_path / "run", capsys)
    assert message.startswith(
        "rainbow_ln_nap: the restarted learning-rate schedule needs blocks of more than"
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["train_minatar", "train_continual"])
def test_a_process_refusing_its_arguments_stops_the_whole_job_in_one_line(name, tmp_path):
    """Process 1 of a two-process job given a size its memory cannot hold (a value mistyped
    for one process): both processes stop within seconds, each with one line (process 0 names
    process 1's reason), and the work dir is not written. Process 0 had gone on alone and
    failed 30 s later at the job's first collective, with gloo's traceback."""
    port = free_port()
    job = [*short(name), f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2"]
    job += ["--num_seeds=2"] if name == "train_minatar" else []  # a seed for each device
    workdir, cache = tmp_path / "run", tmp_path / "cache"
    pair = [
        start(name, [*job, "--process_id=0"], workdir, cache),
        start(name, [*job, *TOO_BIG[name], "--process_id=1"], workdir, cache),
    ]
    (code_0, stderr_0), (code_1, stderr_1) = [finish(process) for process in pair]
    reason = lines_of(stderr_1, name)
    assert code_1 == 1 and len(reason) == 1 and "do not fit in memory" in reason[0], stderr_1
    assert code_0 == 1 and lines_of(stderr_0, name) == [
        reason[0].replace(": error: ", ": error: process 1 stopped: ", 1)
    ], stderr_0
    assert "Traceback" not in stderr_0 + stderr_1
    assert not workdir.exists()


@pytest.mark.parametrize("name", list(LAUNCHERS))
def test_settings_that_cannot_be_built_are_one_line_and_write_nothing(name, tmp_path, capsys):
    workdir = tmp_path / "run"
    for flag, expected in UNBUILDABLE[name]:
        given = flag if isinstance(flag, tuple) else (flag,)
        message = bad_input(name, [*short(name), *given], workdir, capsys)
        assert expected in message, (flag, message)
        assert not workdir.exists(), flag


def test_a_ctrl_c_before_anything_ran_stops_the_launch_in_one_line(tmp_path, capsys, monkeypatch):
    """A Ctrl-C while the launcher still sets up (before the run's own guard) is neither lost nor
    a traceback: one line, exit status 130, nothing written."""
    from plasticity import distributed  # noqa: PLC0415

    def interrupted_setup(*args, **kwargs):  # whatever the setup takes: the Ctrl-C is the point
        os.kill(os.getpid(), signal.SIGINT)
        return False

    monkeypatch.setattr(distributed, "initialize_from_flags", interrupted_setup)
    workdir = tmp_path / "run"
    before = signal.getsignal(signal.SIGINT)
    status = train_minatar.main(["train_minatar", *short("train_minatar"), f"--workdir={workdir}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 130
    assert err == ["train_minatar: stopped by SIGINT before anything ran"]
    assert not workdir.exists()
    assert signal.getsignal(signal.SIGINT) is before  # the handlers are given back


def test_a_finished_launch_exits_ignoring_late_stop_signals():
    """After the run and its summary, a Ctrl-C or SIGTERM during the interpreter's exit (JAX's
    clean-up) neither prints a traceback nor turns the exit status 0 into 143."""
    before = {number: signal.getsignal(number) for number in launch.STOP_SIGNALS}
    try:
        with pytest.raises(SystemExit) as exited:
            launch.exit_after(0)
        assert exited.value.code == 0
        assert all(signal.getsignal(n) is signal.SIG_IGN for n in launch.STOP_SIGNALS)
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)


def test_the_launchers_load_jax_only_once_a_ctrl_c_is_held():
    """Importing JAX takes seconds; the launcher modules leave it to the launch (inside the hold
    above), so a Ctrl-C pressed right after the command starts is one line, not a traceback."""
    modules = ", ".join(f"scripts.{name}" for name in LAUNCHERS)
    check = (
        f"import sys, {modules}; print(sorted(m for m in sys.modules if m.split('.')[0] == 'jax'))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", check], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "[]"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
def test_a_full_disk_is_one_line_naming_the_work_dir_and_the_relaunch_finishes(
    tmp_path, capsys, monkeypatch
):
    """TensorBoard events written to a full device: the launch stops at the first flush with one
    line (the events were written by a thread that, dying, blocked the launch for good), and
    the relaunch on a disk with room completes the run."""
    workdir = tmp_path / "run"
    with monkeypatch.context() as patched:
        patched.setattr(workdir_lib, "_new_event_file", lambda directory: Path("/dev/full"))
        message = bad_input("train_continual", short("train_continual"), workdir, capsys)
    assert message == f"No space left on device: work dir {workdir}"
    assert (
        train_continual.main(["train_continual", *short("train_continual"), f"--workdir={workdir}"])
        == 0
    )
    assert "complete" in capsys.readouterr().err


def test_a_work_dir_under_the_home_directory_is_expanded(tmp_path, capsys, monkeypatch):
    """``--workdir=~/x`` (which the shell leaves as it is) is the home directory's x, not a
    folder named '~' in the current directory."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    args = ["train_continual", *short("train_continual"), "--workdir=~/run"]
    assert train_continual.main(args) == 0
    assert (tmp_path / "home" / "run" / "config.json").is_file()
    assert not (tmp_path / "~").exists()
    assert f"work dir {tmp_path / 'home' / 'run'}" in capsys.readouterr().err


@pytest.mark.parametrize("name", list(LAUNCHERS))
def test_bad_work_dirs_are_one_line_and_left_as_they_are(name, tmp_path, capsys):
    regular = tmp_path / "file"
    regular.write_text("not a directory")
    assert "is a regular file" in bad_input(name, short(name), regular, capsys)
    assert "is not writable" in bad_input(name, short(name), Path("/proc/no_such_run"), capsys)
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    assert "is a symbolic link to nothing" in bad_input(name, short(name), dangling, capsys)
    # Under a dangling link (as the work dirs of a config's variants are): the same line.
    message = bad_input(name, short(name), dangling / "variant", capsys)
    assert message.endswith(f": {dangling} is a symbolic link to nothing ({tmp_path / 'nowhere'})")
    assert "is a special file" in bad_input(name, short(name), Path("/dev/null"), capsys)
    assert "File name too long" in bad_input(name, short(name), tmp_path / ("x" * 300), capsys)
    assert not (tmp_path / "nowhere").exists()
    for text, problem in (("", "is empty"), ("{not json", "is corrupt")):
        workdir = tmp_path / f"config_{len(text)}"
        workdir.mkdir()
        (workdir / "config.json").write_text(text)
        message = bad_input(name, short(name), workdir, capsys)
        assert message.startswith(f"{workdir / 'config.json'} {problem}")
        assert message.endswith("; delete it or use a new --workdir")  # it starts afresh then
        assert sorted(p.name for p in workdir.iterdir()) == ["config.json"]
        assert (workdir / "config.json").read_text() == text
        # With checkpoints, deleting it would leave them unresumable: not the advice then.
        (workdir / "checkpoints" / "256").mkdir(parents=True)
        message = bad_input(name, short(name), workdir, capsys)
        assert message.endswith(
            "; restore it from a copy to resume the run's checkpoints, or use a new --workdir"
        )
    # One run inside another's work dir, or over other runs: refused, nothing written.
    outer = tmp_path / "outer"
    (outer / "variant").mkdir(parents=True)
    (outer / "variant" / "config.json").write_text("{}")
    assert "holds other runs" in bad_input(name, short(name), outer, capsys)
    message = bad_input(name, short(name), outer / "variant" / "inner", capsys)
    assert f"is inside the work dir of another run ({outer / 'variant'})" in message
    assert sorted(p.name for p in outer.rglob("*")) == ["config.json", "variant"]
    # A run's checkpoint folder that is a file: refused before anything trains.
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "checkpoints").write_text("")
    message = bad_input(name, short(name), blocked, capsys)
    assert message == f"{blocked / 'checkpoints'} is a regular file, not a directory"
    assert [p.name for p in blocked.iterdir()] == ["checkpoints"]
    # Checkpoints without the config.json to check a resume against: refused, not resumed.
    orphan = tmp_path / "orphan"
    (orphan / "checkpoints" / "256").mkdir(parents=True)
    assert "holds checkpoints but no config.json" in bad_input(name, short(name), orphan, capsys)
    assert [p.name for p in orphan.iterdir()] == ["checkpoints"]
    # A work dir that another launch holds (its lock): refused and left as it is.
    held = tmp_path / "held"
    held.mkdir()
    descriptor = os.open(held, os.O_RDONLY)
    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        assert "is in use by another launch" in bad_input(name, short(name), held, capsys)
    finally:
        os.close(descriptor)
    assert list(held.iterdir()) == []


@pytest.mark.parametrize("name", ["train_minatar", "train_atari"])
def test_a_learning_start_that_is_never_reached_is_refused(name, tmp_path, capsys):
    workdir = tmp_path / "run"
    frames = 32 if name == "train_minatar" else 64
    message = bad_input(name, [*short(name), f"--frames_per_game={frames}"], workdir, capsys)
    assert message.startswith("learning never starts")
    assert not workdir.exists()


@pytest.mark.parametrize("name", list(LAUNCHERS))
def test_help_prints_the_flags_and_every_config_field_grouped_by_section(name, capsys):
    script, *_ = LAUNCHERS[name]
    assert script.main([name, "--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(script.__doc__.strip().splitlines()[0])
    assert "--workdir" in text and "--experiment" in text and "--stop_after_checkpoints" in text
    # Run as a user runs it (``python -m``): flags are grouped by module names, not file paths.
    helped = subprocess.run(
        [sys.executable, "-m", f"scripts.{name}", "--helpfull"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    groups = [line for line in helped.stdout.splitlines() if line.endswith(":") and "." in line]
    assert f"scripts.{name}:" in groups or "agents.launcher:" in groups, groups
    assert not [line for line in groups if line.startswith(("/", "."))], groups
    fields = text[text.index(f"Config fields of {name}") :].splitlines()
    assert fields[1] == "  [top level]" and "    --config.seed=0" in fields
    sections = [line.strip()[1:-1] for line in fields if line.startswith("  [")]
    assert sections[1:] == sorted(sections[1:]) and len(sections) == len(set(sections)) > 5
    field = "replay.capacity" if name != "train_continual" else "task.num_tasks"
    assert any(line.startswith(f"    --config.{field}=") for line in fields)
    assert "" not in fields[1:] and "    --config.intervention.options={}" in fields  # no gaps
