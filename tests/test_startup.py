"""What a process imports before it trains.

The launchers' building blocks leave out libraries they do not use, each a fraction of a second
to over a second of every launch (BUILD_NOTES.md, "Platform notes"): scikit-learn (the digits are
read from its file), Orbax (single-process runs checkpoint with NumPy), and the plotting
libraries gymnax imports to render. What is deferred still works when asked for. Each check runs
in a fresh interpreter: this test process may have imported any of them already.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOT_IMPORTED = (
    "sklearn",
    "orbax.checkpoint",
    "matplotlib.pyplot",
    "seaborn",
    "pandas",
    "scipy.stats",
)


def run_fresh(script: str, *args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_a_single_process_run_s_pieces_import_no_library_they_do_not_use(tmp_path):
    run_fresh(
        f"""
import sys
import numpy as np
from agents import atari_loop, minatar_env, minatar_loop
from benchmarks import continual_sweep, datasets
from plasticity import checkpointing

minatar_env.MinAtarSuite(("breakout", "space_invaders"))
assert datasets.load_dataset("digits").x_train.shape == (1797, 8, 8, 1)
checkpointer = checkpointing.LocalCheckpointer(sys.argv[1])
checkpointer.save(1, {{"w": np.arange(3.0)}}, {{"step": 1}})
tree, metadata = checkpointer.restore({{"w": np.zeros(3)}})
assert metadata["step"] == 1 and list(tree["w"]) == [0.0, 1.0, 2.0]
imported = sorted(set({NOT_IMPORTED!r}) & set(sys.modules))
assert not imported, f"imported: {{imported}}"
""",
        str(tmp_path / "checkpoints"),
    )


def test_gymnax_s_rendering_libraries_load_when_first_used_and_are_the_real_modules():
    run_fresh(
        """
import sys
from agents import minatar_env
gymnax = minatar_env.import_gymnax()
gymnax.make("Breakout-MinAtar")
assert not {"matplotlib.pyplot", "seaborn"} & set(sys.modules)
from gymnax.environments.misc import pong
assert len(pong.sns.color_palette("cubehelix", 3)) == 3 and pong.plt.figure
import matplotlib.pyplot, seaborn
assert pong.sns.color_palette is seaborn.color_palette
assert pong.plt.figure is matplotlib.pyplot.figure
assert type(sys.modules["seaborn"]) is type(sys)
"""
    )
