r"""Convolutions inside compiled loops on CPUs: XLA's convolution against patch products.

  python -m benchmarks.conv_in_loops [--steps=20] [--repeats=3]

Every trainer here runs its steps inside a ``scan``. XLA:CPU computes a convolution's kernel
gradient there up to 12x slower than outside one, so `plasticity.runtime.compiled_loop_lowering`
computes small convolutions as patch products (`plasticity.layers.PatchConv`). This times one
Adam step (forward, backward, update on a fixed batch) inside a ``scan`` for each network the
trainers build with convolutions, with each implementation (``PLASTICITY_CONV=xla|patches``), and
prints ms per step and the ratio. Compile time is left out; each figure is the fastest of
``--repeats`` runs.
"""

from __future__ import annotations

import os

from absl import flags

from benchmarks import timing


FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the benchmark's flags; called only when it runs as a program, so that importing
    it (the tests do) defines no global flags that could clash with another benchmark's."""
    flags.DEFINE_integer("steps", 20, "Steps per timed scan.", lower_bound=1)
    flags.DEFINE_integer("repeats", 3, "Timed scans per figure; the fastest counts.", lower_bound=1)


def networks_to_time():
    """(name, model, input shape): the continual trainer's CNN and a MinAtar-sized one."""
    from plasticity import networks  # noqa: PLC0415

    return [
        (
            "SmallCNN (32, 64) -> 256, LayerNorm, CIFAR-shaped, batch 32",
            networks.SmallCNN(channels=(32, 64), dense_sizes=(256,), norm="layernorm"),
            (32, 32, 32, 3),
        ),
        (
            "same, batch 128",
            networks.SmallCNN(channels=(32, 64), dense_sizes=(256,), norm="layernorm"),
            (128, 32, 32, 3),
        ),
        (
            "MinAtar-sized: 10x10x4, conv(16) -> pool -> 128, batch 32",
            networks.SmallCNN(channels=(16,), dense_sizes=(128,), num_outputs=6),
            (32, 10, 10, 4),
        ),
    ]


def step_milliseconds(model, shape: tuple[int, ...], implementation: str) -> float:
    """ms per Adam step of ``model`` inside a scan, its convolutions computed by
    ``implementation`` ('xla' or 'patches')."""
    import jax  # noqa: PLC0415
    import optax  # noqa: PLC0415

    from plasticity import runtime  # noqa: PLC0415

    os.environ["PLASTICITY_CONV"] = implementation
    x = jax.random.uniform(jax.random.key(0), shape)
    params = model.init(jax.random.key(1), x)
    labels = jax.random.randint(jax.random.key(2), (shape[0],), 0, model.num_outputs)
    optimizer = optax.adam(1e-3)

    def loss(p):
        logits = model.apply(p, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    def step(carry, _):
        p, state = carry
        updates, state = optimizer.update(jax.grad(loss)(p), state, p)
        return (optax.apply_updates(p, updates), state), None

    def steps(p, state):
        return jax.lax.scan(step, (p, state), None, length=FLAGS.steps)[0]

    state = optimizer.init(params)
    with runtime.compiled_loop_lowering():
        compiled = jax.jit(steps).lower(params, state).compile()
    jax.block_until_ready(compiled(params, state))
    best = timing.fastest_seconds(lambda _: compiled(params, state), FLAGS.repeats)
    return 1e3 * best / FLAGS.steps


def main(argv: list[str]) -> None:
    del argv
    from plasticity import runtime  # noqa: PLC0415

    runtime.apply_runtime_defaults()
    print(runtime.hardware_line())
    chosen = os.environ.get("PLASTICITY_CONV")
    try:
        for name, model, shape in networks_to_time():
            xla = step_milliseconds(model, shape, "xla")
            patches = step_milliseconds(model, shape, "patches")
            print(
                f"{name}: XLA convolution {xla:.2f} ms per step, patch products {patches:.2f} "
                f"ms ({xla / patches:.1f}x)",
                flush=True,
            )
    finally:
        if chosen is None:
            os.environ.pop("PLASTICITY_CONV", None)
        else:
            os.environ["PLASTICITY_CONV"] = chosen


if __name__ == "__main__":
    define_flags()
    timing.run_main(main, "conv_in_loops")
