r"""Throughput of the compiled continual trainer, compile time reported apart.

  python -m benchmarks.continual_throughput [--seeds=8] [--mlp_steps=1000] [--bit_steps=50000]

(a) The MLP memorization task (digits, 64→3×256→10, Adam, batch 128): aggregate steps/s of
    ``jit(vmap(train))`` over N seeds against N separate runs of ``jit(train)``, one after
    another, and against one program looping over the seeds with ``lax.map`` (what
    ``run.runs_per_batch=1`` does). On a CPU the step is compute-bound, so one program can at
    best match the separate runs, and vmap loses a little because XLA:CPU's batched matrix
    products are slower than separate ones; on a GPU vmap should be a multiple.
(b) Bit flipping at batch 1 (20→5→1, SGD): the whole run as one ``lax.scan`` against the
    classic design, a Python loop calling a jitted step once per example (results stay on the
    device; nothing is read back per step, which is the classic loop's best case).
"""

from __future__ import annotations

import time
from typing import Any, Callable

from absl import flags, logging

from benchmarks import timing


FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the benchmark's flags; called only when it runs as a program, so that importing
    it (the tests do) defines no global flags that could clash with another benchmark's."""
    flags.DEFINE_integer("seeds", 8, "Seeds for (a).", lower_bound=1)
    flags.DEFINE_integer(
        "mlp_steps", 1000, "Steps per run for (a): 2 tasks of half as many each.", lower_bound=2
    )
    flags.DEFINE_integer(
        "bit_steps",
        50_000,
        "Steps (examples) for (b), run as whole 10,000-step tasks (at least one).",
        lower_bound=1,
    )
    flags.DEFINE_integer(
        "loop_steps", 10_000, "Steps timed for the Python loop in (b).", lower_bound=1
    )
    flags.DEFINE_integer("repeats", 3, "Timed repetitions; the fastest is reported.", lower_bound=1)


def timed(fn: Callable[[], Any]) -> float:
    """Wall seconds of fn() with its result blocked on; the fastest of --repeats tries."""
    return timing.fastest_seconds(lambda _: fn(), FLAGS.repeats)


def compile_and_time(jitted, *args) -> tuple[float, float, Callable]:
    """(compile seconds, seconds of one warm call, compiled function)."""
    import jax  # noqa: PLC0415

    start = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    compile_seconds = time.perf_counter() - start
    jax.block_until_ready(compiled(*args))  # warm-up call
    return compile_seconds, timed(lambda: compiled(*args)), compiled


def mlp_config(steps: int):
    from benchmarks.configs import nap_label_reset  # noqa: PLC0415

    config = nap_label_reset.get_config()
    config.variants = {}
    config.variant_order = ()
    config.task.num_tasks = 2
    config.task.steps_per_task = steps // 2
    config.diagnostics.every = 0
    return config


def vmapped_vs_separate(num_seeds: int, steps: int) -> dict[str, float]:
    """(a): aggregate steps/s of N vmapped seeds and of N separate runs."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    from benchmarks import continual  # noqa: PLC0415

    trainer = continual.make_trainer(mlp_config(steps))
    steps = trainer.num_tasks * trainer.steps_per_task
    data = trainer.sequence.data
    keys = jnp.stack([jax.random.PRNGKey(s) for s in range(num_seeds)])
    vmapped = jax.jit(jax.vmap(trainer.train, in_axes=(0, None, None)))
    compile_v, seconds_v, _ = compile_and_time(vmapped, keys, {}, data)
    looped = jax.jit(lambda keys, data: jax.lax.map(lambda k: trainer.train(k, {}, data), keys))
    compile_l, seconds_l, _ = compile_and_time(looped, keys, data)
    single = jax.jit(trainer.train)
    compile_s, _, compiled = compile_and_time(single, keys[0], {}, data)
    seconds_s = sum(timed(lambda k=k: compiled(k, {}, data)) for k in keys)
    return {
        "steps": steps,
        "compile_vmapped_s": compile_v,
        "compile_looped_s": compile_l,
        "compile_single_s": compile_s,
        "vmapped_steps_per_s": num_seeds * steps / seconds_v,
        "looped_steps_per_s": num_seeds * steps / seconds_l,
        "separate_steps_per_s": num_seeds * steps / seconds_s,
    }


def bit_flipping_config(steps: int):
    from benchmarks.configs import dohare  # noqa: PLC0415

    from benchmarks import continual_config  # noqa: PLC0415

    config = dict(continual_config.variant_configs(dohare.get_config()))["bit_flipping/backprop"]
    config.grid.l2 = ()
    config.task.flip_period = 10_000
    config.task.num_tasks = max(1, steps // config.task.flip_period)
    config.diagnostics.every = 0
    return config


def scan_vs_python_loop(steps: int, loop_steps: int) -> dict[str, float]:
    """(b): steps/s of the whole-run scan and of a Python loop over a jitted step."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    from benchmarks import continual  # noqa: PLC0415
    from plasticity import optim  # noqa: PLC0415
    from plasticity.train_state import apply_gradients, create_train_state  # noqa: PLC0415

    config = bit_flipping_config(steps)
    trainer = continual.make_trainer(config)
    total = trainer.num_tasks * trainer.steps_per_task
    key = jax.random.PRNGKey(0)
    compile_scan, seconds_scan, _ = compile_and_time(
        jax.jit(trainer.train), key, {}, trainer.sequence.data
    )

    # The classic design: the same model, loss, optimizer and examples, one jitted call per step.
    sequence, model = trainer.sequence, trainer.model
    tx = optim.make_optimizer(config.optimizer)
    grad_fn = jax.value_and_grad(continual.make_loss_fn(model, sequence.kind), has_aux=True)
    batch_size = int(config.task.batch_size)

    @jax.jit
    def step(state, task_state, index):
        indices = index * batch_size + jnp.arange(batch_size, dtype=jnp.int32)
        inputs, targets = sequence.batch(task_state, indices)
        (loss, _), grads = grad_fn(state.params, inputs, targets)
        return apply_gradients(state, grads, tx), loss

    params = model.init(key, jnp.zeros((1, *sequence.input_shape)))["params"]
    state = create_train_state(params, tx, key)
    task_state = jax.jit(sequence.init)(key)
    start = time.perf_counter()
    jax.block_until_ready(step(state, task_state, jnp.int32(0)))
    compile_loop = time.perf_counter() - start

    def loop():
        nonlocal state
        losses = []
        for index in range(loop_steps):
            state, loss = step(state, task_state, index % trainer.steps_per_task)
            losses.append(loss)
        return losses

    initial_state = state

    def fresh_loop():
        nonlocal state
        state = initial_state
        return loop()

    seconds_loop = timed(fresh_loop)
    return {
        "scan_steps": total,
        "compile_scan_s": compile_scan,
        "compile_step_s": compile_loop,
        "scan_steps_per_s": total / seconds_scan,
        "loop_steps_per_s": loop_steps / seconds_loop,
    }


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)
    from plasticity import runtime  # noqa: PLC0415

    runtime.apply_runtime_defaults()  # what scripts.train_continual runs with
    print(f"hardware: {runtime.hardware_line()}")
    a = vmapped_vs_separate(FLAGS.seeds, FLAGS.mlp_steps)
    print(
        f"(a) MLP 64-256-256-256-10, Adam, batch 128, {a['steps']} steps per run, "
        f"{FLAGS.seeds} seeds"
    )
    print(
        f"    compile: vmapped {a['compile_vmapped_s']:.1f} s, looped {a['compile_looped_s']:.1f} s, "
        f"single {a['compile_single_s']:.1f} s"
    )
    separate = a["separate_steps_per_s"]
    print(f"    separate runs: {separate:.0f} steps/s aggregate")
    print(
        f"    vmapped (run.runs_per_batch=0): {a['vmapped_steps_per_s']:.0f} steps/s, "
        f"{a['vmapped_steps_per_s'] / separate:.2f}x separate"
    )
    print(
        f"    one program, lax.map over seeds (run.runs_per_batch=1): "
        f"{a['looped_steps_per_s']:.0f} steps/s, {a['looped_steps_per_s'] / separate:.2f}x separate"
    )
    b = scan_vs_python_loop(FLAGS.bit_steps, FLAGS.loop_steps)
    print(
        f"(b) bit flipping 20-5-1, SGD, batch 1: scan over {b['scan_steps']} steps, Python loop "
        f"over {FLAGS.loop_steps}"
    )
    print(f"    compile: scan {b['compile_scan_s']:.1f} s, step {b['compile_step_s']:.1f} s")
    print(
        f"    whole-run scan: {b['scan_steps_per_s']:.0f} steps/s; Python loop of jitted steps: "
        f"{b['loop_steps_per_s']:.0f} steps/s; ratio "
        f"{b['scan_steps_per_s'] / b['loop_steps_per_s']:.1f}x"
    )


if __name__ == "__main__":
    define_flags()
    timing.run_main(main, "continual_throughput")
