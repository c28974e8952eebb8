"""Network builders: shapes, pinned parameter counts, scale invariance, noise, activations."""

import functools
import os
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from plasticity import effective_lr, layers, networks, optim, param_labels

REPO = Path(__file__).resolve().parents[2]

NORMS = layers.NORMS


def _nature(norm, **head):
    return networks.QNetwork(networks.NatureTorso(norm), networks.ValueHead(norm=norm, **head))


# name: (builder(norm), input, output shape)
BUILDERS = {
    "mlp": (lambda norm: networks.MLP((64, 64), 10, norm), jnp.ones((2, 20)), (2, 10)),
    "nature_dqn": (
        lambda norm: _nature(norm, num_actions=6),
        jnp.ones((2, 84, 84, 4), jnp.uint8),
        (2, 6),
    ),
    "nature_rainbow": (
        lambda norm: _nature(norm, num_actions=18, dueling=True, num_atoms=51, noisy=True),
        jnp.ones((1, 84, 84, 4), jnp.uint8),
        (1, 18),
    ),
    "small_cnn_28": (lambda norm: networks.SmallCNN(norm=norm), jnp.ones((2, 28, 28, 1)), (2, 10)),
    "small_cnn_32": (lambda norm: networks.SmallCNN(norm=norm), jnp.ones((2, 32, 32, 3)), (2, 10)),
    "resnet_tiny": (
        lambda norm: networks.ResNet((1, 1), 16, 10, norm),
        jnp.ones((2, 32, 32, 3)),
        (2, 10),
    ),
    "transformer": (
        lambda norm: networks.Transformer(64, 32, 2, 64, 4, 4, norm),
        jnp.ones((2, 16), jnp.int32),
        (2, 16, 64),
    ),
    "noisy_dueling_c51": (
        lambda norm: networks.QNetwork(
            networks.MLP((16,), 0, norm),
            networks.ValueHead(5, (16,), dueling=True, num_atoms=7, noisy=True, norm=norm),
        ),
        jnp.ones((3, 10)),
        (3, 5),
    ),
}
# The scale-invariance test compiles a gradient per case: near-duplicates are left out, and the
# Nature torso runs on 44×44 frames (the invariance does not depend on the frame size).
INVARIANCE_CASES = [
    (name, "layernorm") for name in sorted(set(BUILDERS) - {"nature_rainbow", "small_cnn_32"})
] + [(name, "rmsnorm") for name in ("mlp", "small_cnn_28", "noisy_dueling_c51", "transformer")]
INVARIANCE_CASES += [(name, "rmsnorm_offset") for name in ("mlp", "noisy_dueling_c51")]
INVARIANCE_INPUTS = {
    "nature_dqn": jnp.ones((1, 36, 36, 4), jnp.uint8),
    "resnet_tiny": jnp.ones((1, 8, 8, 3)),
    "small_cnn_28": jnp.ones((1, 12, 12, 1)),
}

# Pinned parameter counts. MLP and Nature DQN are also derived by hand below.
PINNED_COUNTS = {
    "mlp": {"none": 6154, "layernorm": 6282, "rmsnorm": 6154},
    "nature_dqn": {"none": 1687206, "layernorm": 1687878, "rmsnorm": 1687206},
    "nature_rainbow": {"none": 7496754, "layernorm": 7496914, "rmsnorm": 7495730},
    "small_cnn_28": {"none": 421642, "layernorm": 421866, "rmsnorm": 421642},
    "small_cnn_32": {"none": 545098, "layernorm": 545322, "rmsnorm": 545098},
    "resnet_tiny": {"none": 19850, "layernorm": 19994, "rmsnorm": 19850},
    "transformer": {"none": 109760, "layernorm": 111168, "rmsnorm": 110080},
    "noisy_dueling_c51": {"none": 2692, "layernorm": 2708, "rmsnorm": 2660},
}
for _counts in PINNED_COUNTS.values():  # RMSNorm with an offset has LayerNorm's γ and β
    _counts["rmsnorm_offset"] = _counts["layernorm"]

RNGS = {"params": jax.random.key(0), "noise": jax.random.key(1)}


@functools.lru_cache(maxsize=None)
def _init(name, norm):
    build, x, _ = BUILDERS[name]
    model = build(norm)
    return model, jax.jit(model.init)(RNGS, x)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_output_shape_and_pinned_parameter_count(name, norm):
    build, x, shape = BUILDERS[name]
    model = build(norm)
    variables = jax.eval_shape(model.init, RNGS, x)
    out = jax.eval_shape(
        functools.partial(model.apply, rngs={"noise": RNGS["noise"]}), variables, x
    )
    q = out.q_values if isinstance(out, networks.ValueOutputs) else out
    assert q.shape == shape
    assert networks.parameter_count(variables["params"]) == PINNED_COUNTS[name][norm]


def test_mlp_and_nature_counts_match_hand_derivation():
    dense = lambda i, o, bias: i * o + (o if bias else 0)
    mlp_none = dense(20, 64, 1) + dense(64, 64, 1) + dense(64, 10, 1)
    mlp_ln = dense(20, 64, 0) + 2 * 64 + dense(64, 64, 0) + 2 * 64 + dense(64, 10, 1)
    assert (mlp_none, mlp_ln) == (PINNED_COUNTS["mlp"]["none"], PINNED_COUNTS["mlp"]["layernorm"])
    convs = dense(8 * 8 * 4, 32, 1) + dense(4 * 4 * 32, 64, 1) + dense(3 * 3 * 64, 64, 1)
    nature = convs + dense(7 * 7 * 64, 512, 1) + dense(512, 6, 1)
    assert nature == PINNED_COUNTS["nature_dqn"]["none"] == 1_687_206  # Mnih et al. (2015), Pong


def test_standard_resnet18_parameter_count():
    model = networks.ResNet(norm="layernorm")
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.ones((1, 32, 32, 3)))
    # The CIFAR ResNet-18 with BatchNorm has 11,173,962 parameters; LayerNorm has the same γ, β.
    assert networks.parameter_count(shapes["params"]) == 11_173_962


@pytest.mark.parametrize("name", ["mlp", "small_cnn_28", "resnet_tiny", "transformer"])
def test_norms_remove_redundant_biases(name):
    for norm in ("layernorm", "rmsnorm", "rmsnorm_offset"):
        build, x, _ = BUILDERS[name]
        variables = jax.eval_shape(build(norm).init, RNGS, x)
        labels = traverse_util.flatten_dict(param_labels.label_params(variables["params"]))
        for path in labels:
            if len(path) > 1 and path[-2] == "linear":
                assert path[-1] != "bias", f"{path} keeps a bias in front of a norm"
    build, x, _ = BUILDERS[name]
    flat = traverse_util.flatten_dict(jax.eval_shape(build("none").init, RNGS, x)["params"])
    assert any(path[-2:] == ("linear", "bias") for path in flat)


def _scale_leaves(params, paths, factor):
    flat = dict(traverse_util.flatten_dict(params))
    for path in paths:
        flat[path] = flat[path] * factor
    return traverse_util.unflatten_dict(flat)


@pytest.mark.parametrize("name,norm", INVARIANCE_CASES)
def test_normed_kernels_are_scale_invariant_with_orthogonal_gradients(name, norm):
    build, x, _ = BUILDERS[name]
    x = INVARIANCE_INPUTS.get(name, x)
    model = build(norm)
    variables = jax.jit(model.init)(RNGS, x)
    if x.dtype == jnp.int32:
        x = jax.random.randint(jax.random.key(3), x.shape, 0, 64)
    else:
        x = jax.random.uniform(jax.random.key(3), x.shape) * (255 if x.dtype == jnp.uint8 else 1)
        x = x.astype(BUILDERS[name][1].dtype)
    params = variables["params"]

    def scalar_output(p):
        out = model.apply({"params": p}, x, rngs={"noise": jax.random.key(4)})
        q = out.q_values if isinstance(out, networks.ValueOutputs) else out
        return jnp.sum(jnp.sin(q)), q

    value_and_grad = jax.jit(jax.value_and_grad(scalar_output, has_aux=True))
    (_, reference), grads = value_and_grad(params)
    flat_params = traverse_util.flatten_dict(params)
    flat_grads = traverse_util.flatten_dict(grads)
    layers_ = param_labels.kernel_layers(params, ("normed_kernel",))
    assert layers_, "a normed network must have scale-invariant kernels"
    for layer, paths in layers_.items():
        inner = sum(jnp.vdot(flat_grads[p], flat_params[p]) for p in paths)
        g_norm = jnp.sqrt(sum(jnp.sum(flat_grads[p] ** 2) for p in paths))
        w_norm = jnp.sqrt(sum(jnp.sum(flat_params[p] ** 2) for p in paths))
        assert abs(inner) / (g_norm * w_norm + 1e-30) < 1e-4, layer
    for layer, paths in list(layers_.items())[:3]:
        (_, scaled), _ = value_and_grad(_scale_leaves(params, paths, 3.7))
        np.testing.assert_allclose(
            scaled, reference, atol=2e-4 * (1 + np.abs(reference).max()), err_msg=layer
        )


def test_unnormed_kernel_is_not_scale_invariant():
    model, variables = _init("mlp", "none")
    x = jax.random.normal(jax.random.key(0), (4, 20))
    params = variables["params"]
    scaled = _scale_leaves(params, [("hidden_0", "linear", "kernel")], 3.7)
    apply = jax.jit(model.apply)
    assert not np.allclose(apply({"params": scaled}, x), apply({"params": params}, x))


def test_noisy_layer_draws_independent_noise_per_sample():
    head = networks.ValueHead(num_actions=4, hidden_sizes=(16,), noisy=True, noisy_sigma_init=0.5)
    x = jnp.ones((8, 12))  # eight identical inputs
    variables = jax.jit(head.init)(RNGS, x)
    noisy_q = jax.jit(lambda key: head.apply(variables, x, rngs={"noise": key}).q_values)
    q = noisy_q(jax.random.key(5))
    assert np.unique(np.asarray(q[:, 0])).size == 8, "samples of a batch share one noise draw"
    np.testing.assert_array_equal(q, noisy_q(jax.random.key(5)))
    assert not np.allclose(q, noisy_q(jax.random.key(6)))
    mean = jax.jit(lambda: head.apply(variables, x, deterministic=True).q_values)()
    np.testing.assert_allclose(mean, jnp.broadcast_to(mean[:1], mean.shape))


def test_factorised_noise_matches_per_sample_weight_matrices():
    x = np.asarray(jax.random.normal(jax.random.key(0), (3, 5)))
    sigma_w = np.asarray(jax.random.uniform(jax.random.key(1), (5, 4)))
    sigma_b = np.asarray(jax.random.uniform(jax.random.key(2), (4,)))
    key = jax.random.key(7)
    noise = np.asarray(layers.factorised_noise(x, sigma_w, sigma_b, key))
    key_in, key_out = jax.random.split(key)
    f = lambda e: np.sign(e) * np.sqrt(np.abs(e))
    eps_in = f(np.asarray(jax.random.normal(key_in, (3, 5))))
    eps_out = f(np.asarray(jax.random.normal(key_out, (3, 4))))
    for b in range(3):
        weight_noise = sigma_w * np.outer(eps_in[b], eps_out[b])
        np.testing.assert_allclose(
            noise[b], x[b] @ weight_noise + sigma_b * eps_out[b], rtol=1e-5, atol=1e-6
        )


def test_noisy_dense_mean_and_noise_parts():
    layer = layers.NoisyDense(3, sigma_init=0.5)
    x = jax.random.normal(jax.random.key(0), (2, 5))
    variables = layer.init(RNGS, x)
    p = variables["params"]
    mean = x @ p["kernel"] + p["bias"]
    np.testing.assert_allclose(layer.apply(variables, x, deterministic=True), mean, rtol=1e-6)
    np.testing.assert_allclose(p["sigma_kernel"], 0.5 / np.sqrt(5))
    silent = jax.tree_util.tree_map(
        jnp.asarray, dict(p, sigma_kernel=0 * p["sigma_kernel"], sigma_bias=0 * p["sigma_bias"])
    )
    np.testing.assert_allclose(
        layer.apply({"params": silent}, x, rngs={"noise": RNGS["noise"]}), mean, rtol=1e-6
    )


def test_distributional_and_dueling_heads():
    head = networks.ValueHead(
        num_actions=3, hidden_sizes=(8,), dueling=True, num_atoms=5, v_min=-2.0, v_max=2.0
    )
    x = jax.random.normal(jax.random.key(0), (4, 6))
    variables = head.init(RNGS, x)
    out = head.apply(variables, x)
    assert out.logits.shape == (4, 3, 5)
    probs = jax.nn.softmax(out.logits, axis=-1)
    np.testing.assert_allclose(out.q_values, probs @ np.linspace(-2, 2, 5), rtol=1e-5, atol=1e-6)
    scalar = networks.ValueHead(num_actions=3, hidden_sizes=(8,), dueling=True)
    sv = scalar.init(RNGS, x)
    q = scalar.apply(sv, x).q_values
    # Dueling: the mean advantage is removed, so the mean Q equals the value stream.
    h = nn.relu(
        x @ sv["params"]["value_hidden_0"]["linear"]["kernel"]
        + sv["params"]["value_hidden_0"]["linear"]["bias"]
    )
    v = h @ sv["params"]["output_value"]["kernel"] + sv["params"]["output_value"]["bias"]
    np.testing.assert_allclose(q.mean(axis=1), v[:, 0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "gelu", "tanh", "crelu"])
def test_hidden_activations_expose_pre_and_post(activation):
    model = networks.MLP((8, 8), 3, "layernorm", activation)
    x = jax.random.normal(jax.random.key(0), (5, 4))
    variables = model.init(jax.random.key(1), x)
    out, acts = networks.hidden_activations(model, variables, x)
    np.testing.assert_array_equal(out, model.apply(variables, x))
    assert set(acts) == {"hidden_0", "hidden_1"}
    fn = layers.activation_fn(activation)
    for layer in acts.values():
        np.testing.assert_allclose(layer["postact"], fn(layer["preact"]), rtol=1e-6)
        assert layer["preact"].shape == (5, 8)
        assert layer["postact"].shape == (5, 16 if activation == "crelu" else 8)


def test_unknown_norm_and_activation_are_refused():
    with pytest.raises(ValueError, match="Unknown norm 'batchnorm'"):
        networks.MLP(norm="batchnorm").init(jax.random.key(0), jnp.ones((1, 3)))
    with pytest.raises(ValueError, match="Unknown activation 'swish'"):
        networks.MLP(activation="swish").init(jax.random.key(0), jnp.ones((1, 3)))


def test_rmsnorm_offset_matches_its_definition_and_labels_its_leaves():
    """γ ⊙ x / √(mean(x²) + ε) + β against float64 NumPy, on inputs of very different scales
    (the norm divides the scale out); γ and β are labelled like LayerNorm's."""
    module = layers.RMSNormWithOffset()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 64)).astype(np.float32) * np.float32(
        [[1e-2], [1], [1], [30], [1e3]]
    )
    params = {
        "scale": rng.uniform(0.5, 2.0, 64).astype(np.float32),
        "bias": rng.standard_normal(64).astype(np.float32),
    }
    got = np.asarray(module.apply({"params": params}, x))
    x64 = x.astype(np.float64)
    rms = np.sqrt(np.mean(x64**2, axis=-1, keepdims=True) + layers.NORM_EPSILON)
    expected = x64 / rms * params["scale"] + params["bias"]
    # float32 rounding of a 64-term mean and a reciprocal square root: a few ulp of O(1) values.
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    initial = jax.eval_shape(module.init, RNGS, x)["params"]
    assert {k: v.shape for k, v in initial.items()} == {"scale": (64,), "bias": (64,)}
    mlp = networks.MLP((8,), 2, "rmsnorm_offset")
    variables = mlp.init(RNGS, jnp.ones((1, 3)))
    labels = traverse_util.flatten_dict(param_labels.label_params(variables["params"]))
    normed = {path[-1]: label for path, label in labels.items() if path[-2] == "norm"}
    assert normed == {"scale": "norm_scale", "bias": "norm_offset"}
    # β = 0 at init: the layer starts as plain RMSNorm.
    plain = networks.MLP((8,), 2, "rmsnorm").apply(variables, jnp.linspace(-1, 2, 6).reshape(2, 3))
    offset = mlp.apply(variables, jnp.linspace(-1, 2, 6).reshape(2, 3))
    np.testing.assert_array_equal(np.asarray(plain), np.asarray(offset))


@pytest.mark.parametrize(
    "model", [networks.SmallCNN(), networks.NatureTorso(), networks.ResNet((1,), 8)]
)
def test_a_convolutional_network_given_flat_inputs_says_so_in_one_line(model):
    with pytest.raises(ValueError, match=r"take images \(N, H, W, C\), got shape \(2, 784\)"):
        model.init(jax.random.key(0), jnp.zeros((2, 784)))


def features_left(model: nn.Module, size: int) -> int:
    """Features a network's last layer sees from one size×size×4 image; 0 where it cannot be
    built at all (a kernel wider than its map, an empty flatten)."""
    try:
        out = jax.eval_shape(
            model.init_with_output, jax.random.key(0), jnp.zeros((1, size, size, 4))
        )
    except (TypeError, ValueError, ZeroDivisionError):
        return 0
    return int(np.prod(out[0].shape[1:]))


def test_the_fit_checks_refuse_exactly_the_inputs_the_convolutions_cannot_take():
    """`check_valid_convs_fit` and `check_pooled_convs_fit` refuse an input size exactly where
    the network would leave no feature (as building it finds out, with a traceback), and the
    smallest size they name is the first one that builds."""
    nature = networks.NatureTorso()
    for size in range(30, 40):
        builds = features_left(nature, size) > 0
        try:
            networks.check_valid_convs_fit("nature", (size, size), networks.NATURE_CONV_LAYERS)
            refused = False
        except ValueError as error:
            refused = True
            assert str(error).startswith(f"nature needs an input of at least 36×36, got {size}×")
        assert refused == (not builds) == (size < 36), size
    for num_layers in range(1, 5):
        cnn = networks.SmallCNN(channels=(2,) * num_layers, dense_sizes=(), num_outputs=0)
        for size in (1, 2, 3, 4, 7, 8, 9, 16):
            builds = features_left(cnn, size) > 0
            try:
                networks.check_pooled_convs_fit("channels", (size, size, 4), num_layers)
                refused = False
            except ValueError as error:
                refused = True
                assert f"{num_layers} conv + 2×2 max-pool layers halve the {size}×{size}" in str(
                    error
                )
            assert refused == (not builds), (num_layers, size)


def test_the_effective_learning_rate_exponent_is_the_measured_one():
    """`effective_lr.optimizer_exponent` is the p with which one step turns a scale-invariant
    kernel by an angle proportional to η/‖W‖^p: measured on a kernel feeding a layer norm, from
    the first step at W and at 4W (2 for SGD and momentum, 1 for Adam and RMSProp)."""
    names = ("sgd", "momentum", "adam", "rmsprop")
    x = jax.random.normal(jax.random.key(0), (8, 5))

    def loss(kernel):  # a layer norm without epsilon: exactly invariant to the kernel's scale
        h = x @ kernel
        h = (h - h.mean(-1, keepdims=True)) / jnp.sqrt(h.var(-1, keepdims=True))
        return jnp.sum(jnp.sin(h))

    def optimizer(name):
        config = optim.default_optimizer_config()
        config.update(name=name, learning_rate=1e-4)
        return optim.make_optimizer(config)

    @jax.jit
    def first_steps(kernel):  # {name: the first update of the kernel}, one program for all
        params, grads = {"kernel": kernel}, {"kernel": jax.grad(loss)(kernel)}
        txs = {name: optimizer(name) for name in names}
        return {
            name: tx.update(grads, tx.init(params), params)[0]["kernel"] for name, tx in txs.items()
        }

    kernel = jax.random.normal(jax.random.key(1), (5, 16))
    steps = {scale: first_steps(scale * kernel) for scale in (1.0, 4.0)}

    def turn(name, scale):  # tan of the angle the first step turns the kernel by
        w = np.asarray(scale * kernel, np.float64).ravel()
        step = np.asarray(steps[scale][name], np.float64).ravel()
        along = step @ w / (w @ w)
        return np.linalg.norm(step - along * w) / np.linalg.norm((1 + along) * w)

    for name in names:
        measured = np.log(turn(name, 1.0) / turn(name, 4.0)) / np.log(4.0)
        # Angles of ~1e-4 rad from float32 steps: the measured exponent is 1 or 2 to ~1e-4.
        assert measured == pytest.approx(effective_lr.optimizer_exponent(name), abs=0.02), name


def test_fan_in_uniform_redraws_plain_layers_only_within_their_bounds():
    """DQN Zoo's initialization: every plain kernel and bias U(±1/√fan_in) (a convolution's fan-in
    is kernel height × width × channels), so a kernel's standard deviation is 1/√3 of LeCun's;
    noisy layers (already drawn so) and norm parameters stay as the builder made them."""
    network = networks.QNetwork(
        networks.NatureTorso("layernorm"),
        networks.ValueHead(num_actions=4, hidden_sizes=(512,), norm="none", noisy=True),
    )
    rngs = {"params": jax.random.key(0), "noise": jax.random.key(1)}
    params = network.init(rngs, jnp.zeros((1, 84, 84, 4)))["params"]
    before = traverse_util.flatten_dict(params, sep="/")
    after = traverse_util.flatten_dict(
        networks.initialize("fan_in_uniform", params, jax.random.key(2)), sep="/"
    )
    assert sorted(after) == sorted(before)
    redrawn = sorted(name for name in before if not np.array_equal(before[name], after[name]))
    assert redrawn == [f"torso/conv_{i}/linear/kernel" for i in range(3)]  # LayerNorm: no bias
    for name, fan_in in zip(redrawn, (8 * 8 * 4, 4 * 4 * 32, 3 * 3 * 64)):
        bound = 1 / np.sqrt(fan_in)
        value = np.asarray(after[name])
        assert np.abs(value).max() <= bound and value.dtype == np.float32
        # 10⁴–10⁵ draws: the sample deviation is within 3% (more than 10 of its own errors).
        np.testing.assert_allclose(value.std(), bound / np.sqrt(3), rtol=0.03)
        np.testing.assert_allclose(np.asarray(before[name]).std(), bound, rtol=0.03)  # LeCun's
    unnormed = networks.MLP((300,), 10)
    params = unnormed.init(jax.random.key(0), jnp.zeros((1, 50)))["params"]
    redrawn = networks.initialize("fan_in_uniform", params, jax.random.key(3))
    for layer, fan_in in (("hidden_0/linear", 50), ("output", 300)):
        bias = np.asarray(traverse_util.flatten_dict(redrawn, sep="/")[f"{layer}/bias"])
        assert np.abs(bias).max() <= 1 / np.sqrt(fan_in) and np.unique(bias).size == bias.size
    again = networks.initialize("fan_in_uniform", params, jax.random.key(3))
    jax.tree.map(np.testing.assert_array_equal, again, redrawn)  # a function of the key
    assert networks.initialize("lecun_normal", params, jax.random.key(3)) is params
    with pytest.raises(ValueError, match="Unknown initialization 'xavier'"):
        networks.initialize("xavier", params, jax.random.key(3))


def test_kaiming_uniform_is_dohare_et_als_relu_initialization():
    """PyTorch's ``kaiming_uniform_`` as the authors' networks call it: ReLU layers U(±√(6/fan_in)),
    the output layer (gain 1) U(±√(3/fan_in)), every bias zero; a norm's γ stays 1."""
    model = networks.MLP((2000,), 10, "layernorm")
    params = model.init(jax.random.key(0), jnp.zeros((1, 50)))["params"]
    drawn = networks.initialize("kaiming_uniform", params, jax.random.key(1))
    hidden, output = drawn["hidden_0"]["linear"]["kernel"], drawn["output"]["kernel"]
    for kernel, bound in ((hidden, np.sqrt(6 / 50)), (output, np.sqrt(3 / 2000))):
        assert np.abs(kernel).max() <= bound
        np.testing.assert_allclose(np.std(kernel), bound / np.sqrt(3), rtol=0.03)  # 10⁵ draws
    assert not np.any(drawn["output"]["bias"])
    np.testing.assert_array_equal(drawn["hidden_0"]["norm"]["scale"], 1.0)


def _zero_params(model, inputs):
    """``model``'s parameters as zeros, without compiling its ``init``."""
    rngs = {"params": jax.random.key(0), "noise": jax.random.key(1)}
    shapes = jax.eval_shape(model.init, rngs, inputs)["params"]
    return jax.tree.map(lambda leaf: jnp.zeros(leaf.shape, leaf.dtype), shapes)


def test_kaiming_uniform_gives_a_dueling_heads_two_output_layers_the_output_gain():
    """A dueling head's value and advantage output layers ('output_value', 'output_advantage')
    are output layers: gain 1, U(±√(3/fan_in)), where a hidden layer takes ReLU's √2 (320 draws
    of each: all within the other bound has probability below 2^-100)."""
    network = networks.QNetwork(
        networks.MLP((64,), 0, "none"),
        networks.ValueHead(num_actions=4, hidden_sizes=(), norm="none", dueling=True),
    )
    params = _zero_params(network, jnp.zeros((1, 5)))
    initialize = jax.jit(functools.partial(networks.initialize, "kaiming_uniform"))
    drawn = initialize(params, jax.random.key(1))
    assert sorted(drawn["head"]) == ["output_advantage", "output_value"]
    outputs = [np.asarray(drawn["head"][name]["kernel"]) for name in sorted(drawn["head"])]
    assert np.abs(np.concatenate(outputs, axis=1)).max() <= np.sqrt(3 / 64)
    hidden = np.asarray(drawn["torso"]["hidden_0"]["linear"]["kernel"])
    assert np.sqrt(3 / 5) < np.abs(hidden).max() <= np.sqrt(6 / 5)


def test_fan_in_uniform_draws_each_layer_and_its_bias_afresh():
    """Layers of one shape get different draws (each layer its own key), and biases fill
    U(±1/√fan_in), not a narrower range: 64 draws all below half the bound have probability
    2^-64."""
    model = networks.MLP((64, 64, 64), 0)
    params = _zero_params(model, jnp.zeros((1, 5)))
    drawn = jax.jit(functools.partial(networks.initialize, "fan_in_uniform"))(
        params, jax.random.key(2)
    )
    kernels = [np.asarray(drawn[f"hidden_{i}"]["linear"]["kernel"]) for i in (1, 2)]
    assert not np.any(kernels[0] == kernels[1])
    for i, fan_in in ((0, 5), (1, 64), (2, 64)):
        bias = np.abs(np.asarray(drawn[f"hidden_{i}"]["linear"]["bias"]))
        assert 0.5 / np.sqrt(fan_in) < bias.max() <= 1 / np.sqrt(fan_in)


_INITIALIZE_JOB = """
import functools, hashlib
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_threefry_partitionable", False)
from plasticity import networks
params = {f"hidden_{i}": {"linear": {"kernel": jnp.zeros((3, 3))}} for i in range(6)}
drawn = jax.jit(functools.partial(networks.initialize, "fan_in_uniform"))(params, jax.random.key(7))
kernels = [np.asarray(drawn[f"hidden_{i}"]["linear"]["kernel"]) for i in range(6)]
print(hashlib.sha256(b"".join(kernel.tobytes() for kernel in kernels)).hexdigest())
"""


def test_fan_in_uniform_draws_the_same_network_in_every_process():
    """The draw is a function of the key alone, not of the process's string hashing (a
    multi-process job's processes, or a relaunch, hash strings with other seeds): the same bytes
    here and in a process with another PYTHONHASHSEED."""
    seed = "1" if os.environ.get("PYTHONHASHSEED") == "0" else "0"  # another seed than ours
    there = subprocess.run(
        [sys.executable, "-c", _INITIALIZE_JOB],
        check=False,
        cwd=REPO,
        env={**os.environ, "PYTHONHASHSEED": seed},  # `-c`: this checkout's modules first
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert there.returncode == 0, there.stderr[-2000:]
    namespace = {}
    job = _INITIALIZE_JOB.replace("print(", "digest = (")
    exec(compile(job, "job", "exec"), namespace)  # noqa: S102 - this process's hash seed
    assert there.stdout.strip() == namespace["digest"]
