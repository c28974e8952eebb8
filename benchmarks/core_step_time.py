"""Train-step time of the MLP and the Nature CNN with no norm, LayerNorm and LayerNorm + NaP.

  python -m benchmarks.core_step_time [--repeats=5] [--steps=20]

Prints per-arm milliseconds per step (median over repeats, arms interleaved so machine noise hits
them alike), compile time apart, and the NaP/LN ratio (target ≤ 1.05: the projection is a handful
of norms and scalings next to a forward/backward pass).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import flags

from benchmarks import timing
from plasticity import networks, optim, runtime


FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the benchmark's flags; called only when it runs as a program, so that importing
    it (the tests do) defines no global flags that could clash with another benchmark's."""
    flags.DEFINE_integer("repeats", 5, "Timed repeats per arm (median reported).", lower_bound=1)
    flags.DEFINE_integer("steps", 20, "Train steps per timed repeat.", lower_bound=1)


ARMS = (("none", False), ("layernorm", False), ("layernorm", True))


def _mlp_problem(norm: str):
    model = networks.MLP((256, 256), 10, norm)
    x = jax.random.normal(jax.random.key(0), (256, 784))
    y = jax.random.randint(jax.random.key(1), (256,), 0, 10)
    loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(
        model.apply({"params": p}, x), y
    ).mean()
    return model.init(jax.random.key(2), x)["params"], loss


def _nature_problem(norm: str):
    model = networks.QNetwork(networks.NatureTorso(norm), networks.ValueHead(6, norm=norm))
    x = jax.random.randint(jax.random.key(0), (32, 84, 84, 4), 0, 255).astype(jnp.uint8)
    actions = jax.random.randint(jax.random.key(1), (32,), 0, 6)
    targets = jax.random.normal(jax.random.key(2), (32,))

    def loss(p):
        q = model.apply({"params": p}, x).q_values
        return jnp.mean(jnp.square(q[jnp.arange(32), actions] - targets))

    return model.init(jax.random.key(3), x)["params"], loss


def make_step_runner(problem, norm: str, nap_enabled: bool, steps: int):
    """A jitted function running `steps` Adam updates, and its initial carry."""
    params, loss = problem(norm)
    config = optim.default_optimizer_config()
    config.learning_rate = 1e-4
    config.nap.enabled = nap_enabled
    tx = optim.make_optimizer(config)

    @jax.jit
    def run(carry):
        def step(carry, _):
            p, s = carry
            updates, s = tx.update(jax.grad(loss)(p), s, p)
            return (optax.apply_updates(p, updates), s), None

        return jax.lax.scan(step, carry, None, length=steps)[0]

    return run, (params, tx.init(params))


def main(argv):
    del argv
    runtime.apply_runtime_defaults()  # the launchers' settings: devices, random bits, threads
    print(f"hardware: {runtime.hardware_line()}")  # with the load, as the other benchmarks
    for name, problem in (
        ("MLP 784-256-256-10, batch 256", _mlp_problem),
        ("Nature CNN DQN, batch 32", _nature_problem),
    ):
        runners = {}
        for norm, nap_enabled in ARMS:
            run, carry = make_step_runner(problem, norm, nap_enabled, FLAGS.steps)
            start = time.perf_counter()
            carry = jax.block_until_ready(run(carry))
            runners[(norm, nap_enabled)] = (run, carry, time.perf_counter() - start)
        times = {arm: [] for arm in ARMS}
        for _ in range(FLAGS.repeats):
            for arm in ARMS:
                run, carry, _ = runners[arm]
                start = time.perf_counter()
                jax.block_until_ready(run(carry))
                times[arm].append((time.perf_counter() - start) / FLAGS.steps)
        print(f"\n{name}")
        for arm in ARMS:
            label = arm[0] + (" + NaP" if arm[1] else "")
            print(
                f"  {label:16s} {1e3 * np.median(times[arm]):8.2f} ms/step   "
                f"(compile + first call {runners[arm][2]:.1f} s)"
            )
        ratio = np.median(times[("layernorm", True)]) / np.median(times[("layernorm", False)])
        print(f"  NaP / LN ratio   {ratio:.3f}  (target <= 1.05)")


if __name__ == "__main__":
    define_flags()
    timing.run_main(main, "core_step_time")
