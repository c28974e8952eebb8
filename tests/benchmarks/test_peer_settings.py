"""benchmarks.peer_settings: the project's configs at each peer's settings are the trainers' valid
configs and carry the peers' numbers (what `benchmarks.peers` times)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.configs import validate_config
from benchmarks import continual_sweep, peer_settings


def test_minatar_config_makes_one_update_per_iteration_of_ten_envs():
    config = peer_settings.purejaxrl_config(seeds=8, steps=200_000, diagnostics=False)
    validate_config(config, "minatar")
    assert config.env.num_envs * config.updates_per_frame == 1
    assert (config.learner.batch_size, config.replay.capacity, config.num_seeds) == (128, 10_000, 8)
    assert config.network.torso == "mlp" and config.diagnostics.every_frames == 0
    # The peer computes no gradient norm; asking for the diagnostics brings it back.
    assert not config.learner.grad_norm
    assert peer_settings.purejaxrl_config(seeds=1, steps=1_000, diagnostics=True).learner.grad_norm


def test_minatar_config_runs_seeds_as_the_project_does_unless_asked_to_vmap_them():
    default = peer_settings.purejaxrl_config(seeds=8, steps=200_000, diagnostics=False)
    vmapped = peer_settings.purejaxrl_config(8, 200_000, False, runs_per_batch=0)
    assert default.run.runs_per_batch is None and vmapped.run.runs_per_batch == 0
    # The suite runs on CPUs, where the project's default maps one seed at a time.
    assert peer_settings.seed_mapping(default) == "one seed at a time on each device"
    assert peer_settings.seed_mapping(vmapped) == "seeds vmapped on each device"
    single = peer_settings.purejaxrl_config(1, 200_000, False, runs_per_batch=0)
    assert peer_settings.seed_mapping(single) == "one seed"


def test_atari_config_makes_one_update_per_four_agent_steps_of_one_env():
    config = peer_settings.cleanrl_config("Breakout", agent_steps=4_096)
    validate_config(config, "atari")
    assert config.env.num_envs == 1 and config.frames_per_game == 4 * 4_096
    assert 4 * config.env.frame_skip * config.updates_per_frame == 1
    assert config.learner.batch_size == 32 and config.network.torso == "nature"
    assert not config.learner.grad_norm and config.diagnostics.every_frames == 0


def test_bitflip_config_runs_each_seed_over_the_examples_asked_for():
    plan = continual_sweep.plan_experiment(peer_settings.bitflip_config(seeds=4, examples=50_000))
    ((name, trainer),) = plan.variants
    assert name == "bit_flipping/backprop" and plan.num_runs == 4
    assert trainer.num_tasks * trainer.steps_per_task == 50_000
    assert int(trainer.config.task.batch_size) == 1


def test_permuted_mnist_config_is_lops_network_on_mnist_shaped_data():
    dataset = peer_settings.mnist_shaped_noise(1_000)
    assert dataset.x_train.shape == (1_000, 28, 28, 1) and set(np.unique(dataset.y_train)) <= set(
        range(10)
    )
    plan = continual_sweep.plan_experiment(
        peer_settings.permuted_mnist_config(2_000), dataset=dataset
    )
    ((_, trainer),) = plan.variants
    assert trainer.num_tasks * trainer.steps_per_task == 2_000
    params = jax.eval_shape(trainer.model.init, jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))
    # 784-2000-2000-2000-10 with biases: 1,570,000 + 2 x 4,002,000 + 20,010.
    assert sum(x.size for x in jax.tree.leaves(params)) == 9_594_010
    # The three wide kernels defer their SGD updates (plasticity.deferred); the 2000x10 head
    # is under the size threshold and updates at every step.
    assert trainer.deferred_kernels == ("hidden_0/linear", "hidden_1/linear", "hidden_2/linear")


def test_minatar_mlp_loop_computes_its_products_with_xla_and_the_conv_preset_with_ynnpack():
    from agents import configs, minatar_loop
    from plasticity import runtime

    mlp = peer_settings.purejaxrl_config(seeds=1, steps=1_000, diagnostics=False)
    conv = configs.get_config("dqn", "minatar")
    if not runtime.loop_compiler_options("xla", True):
        pytest.skip("this jaxlib or backend takes no product option")
    assert minatar_loop.chunk_compiler_options(mlp) == runtime.loop_compiler_options("xla", True)
    assert minatar_loop.chunk_compiler_options(conv) == {}
    assert peer_settings.products_in_words(mlp).startswith("XLA's own matrix products")
    assert peer_settings.products_in_words(conv).startswith("matrix products as XLA_FLAGS set")
    mlp.run.cpu_products = "ynnpack"
    assert minatar_loop.chunk_compiler_options(mlp) == {}
