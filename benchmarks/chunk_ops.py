r"""The MinAtar chunk's scatters, gathers and sorts: what a GPU runs as kernels of their own.

  python -m benchmarks.chunk_ops [--preset=purejaxrl|conv]

On a GPU each iteration of the loop is one CUDA graph whose time is mostly kernel launches (about
1–2 µs each at PureJaxRL's settings, BUILD_NOTES.md "On a GPU"). Elementwise work fuses into few
kernels; scatters, sorts and chains of them do not: each scatter is a kernel, and a scatter that
depends on the previous one (a tree updated level by level) cannot share it. So these counts, taken
from the chunk's jaxpr on any machine, track the GPU's kernel count without a GPU: the primitives
``scatter``, ``scatter-add``, ``gather`` and ``sort`` of one iteration (the chunk's ``lax.scan``
body), outside the conditionals (acting, env, replay add) and inside them (sampling and the update;
the diagnostics too when they are on, as in the ``conv`` preset, the project's MinAtar DQN), each
with the source line it comes from (``--by_line``). The jaxpr is traced as for a GPU: without the
CPU-only lowering of `plasticity.runtime.compiled_loop_lowering` (patch convolutions), which only
the compile time below uses (the chunk compiled as training compiles it,
`agents.minatar_loop.compiled_chunk`). Gathers that only read are often fused with their
neighbours (a sum tree's descent is one kernel); scatters and sorts never are. Also prints the
chunk's compile time on this machine.
"""

from __future__ import annotations

import collections
import time
from typing import Any

import jax
import numpy as np
from absl import flags
from jax._src import source_info_util

from agents import configs, minatar_loop
from benchmarks import op_profile, peer_settings, timing
from plasticity import runtime


def define_flags() -> None:
    """Defines the benchmark's flags; called only when it runs as a program, so that importing it
    (the tests do) defines no global flags that could clash with another benchmark's
    (`benchmarks.loop_breakdown` has a ``--preset`` too)."""
    flags.DEFINE_enum("preset", "purejaxrl", ["purejaxrl", "conv"], "Loop settings.")
    flags.DEFINE_bool("by_line", False, "Also list the counts by source line.")


COUNTED = ("scatter", "scatter-add", "gather", "sort")


def _config(preset: str):
    """PureJaxRL's settings (no diagnostics, as the peer), or the project's MinAtar DQN preset."""
    if preset == "purejaxrl":
        return peer_settings.purejaxrl_config(1, 20_000, False)
    config = configs.get_config("dqn", "minatar")
    config.num_seeds, config.games = 1, ("breakout",)
    return config


def _where(eqn) -> str:
    frames = source_info_util.user_frames(eqn.source_info.traceback)
    return "; ".join(f"{f.file_name.rsplit('/', 1)[-1]}:{f.start_line}" for f in list(frames)[:2])


def count_primitives(jaxpr) -> collections.Counter:
    """Counts of `COUNTED` primitives keyed by (inside a conditional, primitive, source)."""
    return collections.Counter(
        (inside_cond, eqn.primitive.name, _where(eqn))
        for eqn, inside_cond in op_profile.jaxpr_equations(jaxpr)
        if eqn.primitive.name in COUNTED
    )


def learning_plan(iterations: int) -> dict[str, np.ndarray]:
    """A chunk's plan in which every iteration makes one update, without diagnostics or
    interventions (epsilon and the importance exponent at 1)."""
    return {
        "epsilon": np.ones(iterations, np.float32),
        "importance_exponent": np.ones(iterations, np.float32),
        "updates": np.ones(iterations, np.int32),
        "diagnose": np.zeros(iterations, bool),
        "intervene": np.zeros(iterations, bool),
    }


def chunk(preset: str) -> tuple[minatar_loop.MinAtarAgent, Any, dict[str, np.ndarray]]:
    """The loop's programs for one seed, its abstract state and a 4-iteration `learning_plan`."""
    config = _config(preset)
    agent = minatar_loop.make_agent(config, ("breakout",), full_action_space=False)
    state = jax.eval_shape(agent.init, np.arange(1, dtype=np.int32))
    return agent, state, learning_plan(4)


def main(argv) -> None:
    del argv
    agent, state, plan = chunk(flags.FLAGS.preset)
    counts = count_primitives(jax.make_jaxpr(agent.run_chunk)(state, np.int32(0), plan).jaxpr)
    start = time.perf_counter()
    minatar_loop.compiled_chunk(agent, state, np.int32(0), plan)  # lowered as training does
    compile_s = time.perf_counter() - start
    print(f"hardware: {runtime.hardware_line()}")
    print(f"MinAtar chunk, preset {flags.FLAGS.preset}, one seed; compile {compile_s:.2f} s")
    for inside, part in (
        (False, "outside conditionals (act, env, replay add)"),
        (True, "inside conditionals (the update; the diagnostics when on)"),
    ):
        by_primitive = collections.Counter()
        for (cond, primitive, _), n in counts.items():
            if cond == inside:
                by_primitive[primitive] += n
        figures = ", ".join(f"{by_primitive[p]} {p}" for p in COUNTED)
        print(f"  {part}: {figures}")
    if flags.FLAGS.by_line:
        for (inside, primitive, where), n in sorted(counts.items(), key=lambda kv: -kv[1]):
            print(f"    {n:3d} {primitive:11s} {'inside' if inside else 'outside':7s} {where}")


if __name__ == "__main__":
    define_flags()
    timing.run_main(main, "chunk_ops")
