"""NaP: norms held at their initial values, output layer untouched, function preserved."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from plasticity import effective_lr, layers, nap, networks, optim, param_labels

MODEL = networks.MLP((32, 32), 5, "layernorm")
X = jax.random.normal(jax.random.key(0), (64, 12))
Y = jax.random.randint(jax.random.key(1), (64,), 0, 5)
PARAMS = jax.jit(MODEL.init)(jax.random.key(2), X)["params"]
INVARIANT = nap.scale_invariant_norms(MODEL, X)  # ('hidden_0/norm',): hidden_1 feeds the output


def _loss(params):
    logits = MODEL.apply({"params": params}, X)
    return optax.softmax_cross_entropy_with_integer_labels(logits, Y).mean()


@functools.lru_cache(maxsize=None)
def _trainer(
    nap_enabled: bool, gamma_beta: str = "project", period: int = 1, learning_rate: float = 3e-2
):
    config = optim.default_optimizer_config()
    config.learning_rate = learning_rate
    config.nap.update(enabled=nap_enabled, gamma_beta=gamma_beta, period=period)
    tx = optim.make_optimizer(config, nap_invariant_norms=INVARIANT)

    @jax.jit
    def run(params, num_steps_unused=None):
        def step(carry, _):
            p, s = carry
            updates, s = tx.update(jax.grad(_loss)(p), s, p)
            return (optax.apply_updates(p, updates), s), None

        (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=10)
        return params

    return tx, run


def _layer_norms(params, labels):
    return {k: float(v) for k, v in effective_lr.layer_weight_norms(params, labels).items()}


def test_adam_steps_with_nap_keep_hidden_kernels_at_initial_norm():
    _, run = _trainer(True)
    trained = run(PARAMS)
    before = _layer_norms(PARAMS, ("normed_kernel",))
    after = _layer_norms(trained, ("normed_kernel",))
    assert set(before) == {"hidden_0/linear", "hidden_1/linear"}
    for layer in before:
        np.testing.assert_allclose(after[layer], before[layer], rtol=1e-5)
    assert INVARIANT == ("hidden_0/norm",)
    groups = param_labels.norm_layers(PARAMS)
    norms = nap.group_norms(trained, groups)
    np.testing.assert_allclose(norms["hidden_0/norm"], np.sqrt(32), rtol=1e-5)  # ‖[γ₀; β₀]‖ = √d
    assert abs(float(norms["hidden_1/norm"]) - np.sqrt(32)) > 1e-3  # feeds the output: free
    # Without NaP the same run grows the norms: the test above could fail.
    _, run_plain = _trainer(False)
    grown = _layer_norms(run_plain(PARAMS), ("normed_kernel",))
    assert all(grown[layer] > before[layer] * 1.001 for layer in before)


def test_projection_never_touches_the_output_layer_or_biases():
    tx_nap, _ = _trainer(True)
    tx_plain, _ = _trainer(False)
    grads = jax.grad(_loss)(PARAMS)
    first_update = lambda tx: jax.jit(lambda g, p: tx.update(g, tx.init(p), p)[0])(grads, PARAMS)
    u_nap, u_plain = first_update(tx_nap), first_update(tx_plain)
    labels = traverse_util.flatten_dict(param_labels.label_params(PARAMS))
    flat_nap = traverse_util.flatten_dict(u_nap)
    flat_plain = traverse_util.flatten_dict(u_plain)
    for path, label in labels.items():
        if label in ("output_kernel", "bias"):
            np.testing.assert_array_equal(flat_nap[path], flat_plain[path], err_msg=str(path))
        if label == "normed_kernel":
            assert not np.allclose(flat_nap[path], flat_plain[path])


def test_projection_preserves_the_function_up_to_the_norm_epsilon():
    _, run_plain = _trainer(False, learning_rate=1e-1)
    grown = run_plain(PARAMS)
    groups = nap.projection_groups(grown, gamma_beta="free")
    targets = nap.group_norms(PARAMS, groups)
    projected = nap.project(grown, groups, targets)
    for name, norm in nap.group_norms(projected, groups).items():
        np.testing.assert_allclose(norm, targets[name], rtol=1e-6)
    before = MODEL.apply({"params": grown}, X)
    after = MODEL.apply({"params": projected}, X)
    # LN(cz) − LN(z) ∝ ε/var(z): with flax's ε = 1e-6 the outputs move by ~1e-6, far below 1e-4.
    assert layers.NORM_EPSILON == 1e-6
    np.testing.assert_allclose(after, before, atol=1e-4)


def test_projection_period_and_gamma_beta_modes():
    _, run_every_3 = _trainer(True, "free", period=3)
    trained = run_every_3(PARAMS)  # 10 updates: last projection at update 9, then one free step
    before = _layer_norms(PARAMS, ("normed_kernel",))
    after = _layer_norms(trained, ("normed_kernel",))
    assert all(abs(after[k] / before[k] - 1) > 1e-6 for k in before)
    assert all(abs(after[k] / before[k] - 1) < 0.05 for k in before)
    _, run_free = _trainer(True, "free")
    free_norms = nap.group_norms(run_free(PARAMS), param_labels.norm_layers(PARAMS))
    assert any(abs(float(n) - np.sqrt(32)) > 1e-4 for n in free_norms.values())


def test_an_update_with_a_projection_period_is_reverse_differentiable():
    """A meta-gradient through the optimizer (here: of the loss after one update, with respect to
    a scale on the gradient the update is given) works with a period > 1, whose projection is a
    `lax.cond`; a vmap-only branch (`mesh.cond_when_any`) would refuse reverse mode."""
    config = optim.default_optimizer_config()
    config.update(name="sgd", learning_rate=0.1)  # Adam's sqrt at a zero moment would give NaN
    config.nap.update(enabled=True, gamma_beta="free", period=3)
    tx = optim.make_optimizer(config, nap_invariant_norms=INVARIANT)
    grads = jax.grad(_loss)(PARAMS)

    def loss_after_update(scale):
        scaled = jax.tree_util.tree_map(lambda g: scale * g, grads)
        updates, _ = tx.update(scaled, tx.init(PARAMS), PARAMS)
        return _loss(optax.apply_updates(PARAMS, updates))

    slope = float(jax.grad(loss_after_update)(1.0))
    assert np.isfinite(slope) and slope < 0  # a longer step down the gradient lowers the loss


def test_regularize_mode_pulls_gamma_beta_towards_init():
    config = optim.default_optimizer_config()
    config.update(name="sgd", learning_rate=1.0)
    config.nap.update(enabled=True, gamma_beta="regularize", gamma_beta_l2=0.5)
    tx = optim.make_optimizer(config)
    moved = jax.tree_util.tree_map(lambda p: p + 1.0, PARAMS)
    state = tx.init(PARAMS)
    zero = jax.tree_util.tree_map(jnp.zeros_like, PARAMS)
    updates, _ = tx.update(zero, state, moved)
    assert float(updates["hidden_0"]["norm"]["scale"][0]) == pytest.approx(-0.5)
    assert float(updates["output"]["bias"][0]) == pytest.approx(0.0)


def test_projection_groups_add_every_invariant_norm_under_project_only():
    """'project' (nap_projection's default) groups the (γ, β) of every named invariant norm, here
    two, beside the normed kernels; 'free' and 'regularize' group the kernels only (under
    'regularize' the L2 pull alone acts on (γ, β)), whatever norms are named. A (γ, β) starts at
    norm √16 (γ = 1, β = 0); a period below 1 is refused."""
    model = networks.MLP((16, 16, 16), 4, "layernorm")
    x = np.ones((6, 5), np.float32)
    params = model.init(jax.random.key(0), x)["params"]
    invariant = nap.scale_invariant_norms(model, x, params)
    assert invariant == ("hidden_0/norm", "hidden_1/norm")
    kernels = {"hidden_0/linear", "hidden_1/linear", "hidden_2/linear"}
    assert set(nap.projection_groups(params, "project", invariant)) == kernels | set(invariant)
    for mode in ("free", "regularize"):
        assert set(nap.projection_groups(params, mode, invariant)) == kernels
    norms = nap.nap_projection(invariant_norms=invariant).init(params).reference_norms
    assert set(norms) == {name.replace("/", ".") for name in kernels | set(invariant)}
    np.testing.assert_allclose([norms["hidden_0.norm"], norms["hidden_1.norm"]], 4.0, rtol=1e-6)
    with pytest.raises(ValueError, match="period must be >= 1, got 0"):
        nap.nap_projection(period=0)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_a_narrow_layer_whose_next_norm_feels_its_epsilon_is_left_free(activation):
    """Width 4: for these inputs the second layer's units leave the third norm a variance small
    enough that its ε moves the outputs when the second (γ, β) is scaled, ratio 1.1e-3 to
    1.5e-3, above the 1e-3 tolerance (and far below a non-invariant group's order one), so only
    the first layer's (γ, β) is projected; at the ε level (~1e-6) the first stays invariant."""
    model = networks.MLP((4, 4, 4), 4, "layernorm", activation)
    x = np.ones((2, 9), np.float32)
    ratios = nap.invariance_ratios(model, x)
    assert ratios["hidden_0/norm"] < 1e-5 and 1.05e-3 < ratios["hidden_1/norm"] < 1e-2
    assert nap.scale_invariant_norms(model, x) == ("hidden_0/norm",)


def test_nap_without_norm_is_refused():
    plain = networks.MLP((8,), 2, "none")
    params = plain.init(jax.random.key(0), jnp.ones((1, 3)))["params"]
    config = optim.default_optimizer_config()
    config.nap.enabled = True
    with pytest.raises(ValueError, match="NaP needs a normalization layer"):
        optim.make_optimizer(config).init(params)
    with pytest.raises(ValueError, match="NaP needs a normalization layer"):
        nap.check_nap_config("none", True)
    nap.check_nap_config("layernorm", True)
    with pytest.raises(ValueError, match="gamma_beta"):
        nap.nap_projection(gamma_beta="sideways")


def test_noisy_layer_kernels_are_projected_jointly():
    head = networks.ValueHead(3, (8,), noisy=True, norm="layernorm")
    rngs = {"params": jax.random.key(0), "noise": jax.random.key(1)}
    params = jax.eval_shape(head.init, rngs, jnp.ones((2, 4)))["params"]
    groups = nap.projection_groups(params, "free")
    assert groups == {
        "hidden_0/linear": [
            ("hidden_0", "linear", "kernel"),
            ("hidden_0", "linear", "sigma_kernel"),
        ]
    }


def test_regularize_elsewhere_pulls_only_the_gamma_beta_that_are_not_projected():
    """gamma_beta='project' with gamma_beta_elsewhere='regularize': the non-invariant (γ, β) are
    pulled towards init by λ = 0.5, the projected ones only projected, onto their initial norm
    along the direction they were moved to (moved·ρ/‖moved‖, float32 to ~1e-6)."""
    config = optim.default_optimizer_config()
    config.update(name="sgd", learning_rate=1.0)
    config.nap.update(
        enabled=True, gamma_beta="project", gamma_beta_elsewhere="regularize", gamma_beta_l2=0.5
    )
    tx = optim.make_optimizer(config, nap_invariant_norms=INVARIANT)
    moved = jax.tree_util.tree_map(lambda p: p + 1.0, PARAMS)
    zero = jax.tree_util.tree_map(jnp.zeros_like, PARAMS)
    updates, _ = tx.update(zero, tx.init(PARAMS), moved)
    assert float(updates["hidden_1"]["norm"]["scale"][0]) == pytest.approx(-0.5)
    # hidden_0's (γ, β) are projected instead: back onto their initial norm, not pulled by 0.5.
    landed = moved["hidden_0"]["norm"]["scale"] + updates["hidden_0"]["norm"]["scale"]
    landed_offset = moved["hidden_0"]["norm"]["bias"] + updates["hidden_0"]["norm"]["bias"]
    norm = np.sqrt(np.sum(np.square(landed)) + np.sum(np.square(landed_offset)))
    np.testing.assert_allclose(norm, np.sqrt(32), rtol=1e-5)
    # And in the direction they were moved to: a projection alone, no pull before it (which
    # keeps that norm but turns (2, 1) towards (1, 0), e.g. to (0.949, 0.316) from (0.894, 0.447)).
    moved_pair = np.concatenate([moved["hidden_0"]["norm"][k] for k in ("scale", "bias")])
    initial = np.concatenate([PARAMS["hidden_0"]["norm"][k] for k in ("scale", "bias")])
    expected = moved_pair * np.linalg.norm(initial) / np.linalg.norm(moved_pair)
    np.testing.assert_allclose(np.concatenate([landed, landed_offset]), expected, rtol=1e-5)
    # With 'free' none is projected, so every (γ, β) is elsewhere: each is pulled by 0.5.
    config.nap.gamma_beta = "free"
    tx = optim.make_optimizer(config, nap_invariant_norms=INVARIANT)
    updates, _ = tx.update(zero, tx.init(PARAMS), moved)
    for layer in ("hidden_0", "hidden_1"):
        np.testing.assert_allclose(updates[layer]["norm"]["scale"], -0.5, rtol=1e-6)
        np.testing.assert_allclose(updates[layer]["norm"]["bias"], -0.5, rtol=1e-6)
    with pytest.raises(ValueError, match="gamma_beta_elsewhere"):
        config.nap.gamma_beta_elsewhere = "project"
        optim.make_optimizer(config)
    with pytest.raises(ValueError, match="Unknown norm layers"):
        nap.projection_groups(PARAMS, "project", ("hidden_7/norm",))


def _random_params(model, x, seed=0, **init_kwargs):
    """Random parameters without compiling `model.init`: kernels N(0, 1/fan_in), norm scales
    around 1, offsets and biases around 0 (a network part-way through training)."""
    rngs = {"params": jax.random.key(0), "noise": jax.random.key(1)}
    shapes = jax.eval_shape(lambda: model.init(rngs, x, **init_kwargs))["params"]
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        if len(leaf.shape) > 1:
            fan_in = int(np.prod(leaf.shape[:-1]))
            return jnp.asarray(rng.standard_normal(leaf.shape) / np.sqrt(fan_in), jnp.float32)
        centre = 1.0 if path[-1].key == "scale" else 0.0
        return jnp.asarray(centre + 0.2 * rng.standard_normal(leaf.shape), jnp.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def _nature_q(norm):
    head = networks.ValueHead(3, (16,), dueling=True, norm=norm)
    return networks.QNetwork(networks.NatureTorso(norm), head)


# builder → (model for a norm, inputs, norm layers whose (γ, β) the default projects).
BUILDERS = {
    "mlp": (
        lambda norm: networks.MLP((16, 16, 16), 4, norm),
        np.random.default_rng(0).standard_normal((6, 5)).astype(np.float32),
        {"hidden_0/norm", "hidden_1/norm"},
    ),
    "mlp_gelu": (
        lambda norm: networks.MLP((16, 16), 4, norm, "gelu"),
        np.random.default_rng(0).standard_normal((6, 5)).astype(np.float32),
        set(),
    ),
    "nature_torso": (
        networks.NatureTorso,
        np.random.default_rng(1).random((2, 36, 36, 4)).astype(np.float32),
        {"conv_0/norm", "conv_1/norm"},
    ),
    "nature_q_network": (
        _nature_q,
        np.random.default_rng(1).random((2, 36, 36, 4)).astype(np.float32),
        {"torso/conv_0/norm", "torso/conv_1/norm", "torso/conv_2/norm"},
    ),
    "small_cnn": (
        lambda norm: networks.SmallCNN((4, 8), (16,), 4, norm),
        np.random.default_rng(2).standard_normal((3, 12, 12, 3)).astype(np.float32),
        {"conv_0/norm", "conv_1/norm"},
    ),
    "resnet": (
        lambda norm: networks.ResNet((1, 1), 8, 4, norm),
        np.random.default_rng(3).standard_normal((3, 8, 8, 3)).astype(np.float32),
        {"stage_0_block_0/conv_0/norm", "stage_1_block_0/conv_0/norm"},
    ),
    "transformer": (
        lambda norm: networks.Transformer(16, 8, 1, 16, 2, norm=norm),
        np.random.default_rng(4).integers(0, 16, (3, 8)).astype(np.int32),
        set(),
    ),
}


def _outputs(model, params, x):
    leaves = jax.tree_util.tree_leaves(model.apply({"params": params}, x))
    return np.concatenate([np.ravel(np.asarray(leaf, np.float64)) for leaf in leaves])


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm", "rmsnorm_offset"])
@pytest.mark.parametrize("builder", sorted(BUILDERS))
def test_default_projection_preserves_the_function_of_every_builder(builder, norm):
    """Move only (γ, β), or everything, then project with the default groups: same outputs.

    The default projects every normed kernel plus the (γ, β) that `scale_invariant_norms` finds
    (listed per builder: ReLU layers feeding another normalized layer). Projecting those can only
    change the outputs through the norms' ε (~1e-6 relative); projecting every normed layer's
    (γ, β), as the previous default did, moves them by 0.4 to 5 (outputs of order 1) here.
    """
    make, x, expected = BUILDERS[builder]
    model = make(norm)
    initial = _random_params(model, x)
    invariant = nap.scale_invariant_norms(model, x, initial)
    assert set(invariant) == expected
    groups = nap.projection_groups(initial, "project", invariant)
    targets = nap.group_norms(initial, groups)
    labels = traverse_util.flatten_dict(param_labels.label_params(initial))
    rng = np.random.default_rng(5)

    def moved(only_gamma_beta):
        flat = {}
        for path, value in traverse_util.flatten_dict(initial).items():
            label = labels[path]
            noise = rng.standard_normal(value.shape).astype(np.float32)
            if label in param_labels.NORM_LABELS:
                flat[path] = (
                    value * (1.5 + 0.3 * noise) if label == "norm_scale" else value + 0.3 * noise
                )
            elif not only_gamma_beta:
                grown = 1.7 if label == "normed_kernel" else 1.0  # norm growth to undo
                flat[path] = grown * value + 0.1 * np.std(value) * noise
            else:
                flat[path] = value
        return traverse_util.unflatten_dict(flat)

    for only_gamma_beta in (True, False):
        params = moved(only_gamma_beta)
        projected = nap.project(params, groups, targets)
        for name, value in nap.group_norms(projected, groups).items():
            np.testing.assert_allclose(value, targets[name], rtol=1e-5, err_msg=name)
        before, after = _outputs(model, params, x), _outputs(model, projected, x)
        # LN(cz) − LN(z) ∝ ε/var(z) with ε = 1e-6: far below 1e-4 of the outputs' scale.
        scale = np.max(np.abs(before))
        np.testing.assert_allclose(after, before, rtol=0, atol=1e-4 * scale, err_msg=builder)


def _states(name, nap_enabled, moments="keep", period=1, steps=1, learning_rate=0.3):
    """(first update, optimizer state after each of `steps` steps) with `name` at a rate that
    grows the kernels enough for the projection to move them."""
    config = optim.default_optimizer_config()
    config.update(name=name, learning_rate=learning_rate)
    config.nap.update(enabled=nap_enabled, period=period, moments=moments)
    tx = optim.make_optimizer(config, nap_invariant_norms=INVARIANT)
    params, state, states, first = PARAMS, tx.init(PARAMS), [], None
    for _ in range(steps):
        updates, state = tx.update(jax.grad(_loss)(params), state, params)
        first = jax.device_get(updates) if first is None else first
        states.append(jax.device_get(state))
        params = optax.apply_updates(params, updates)
    return first, states


def _moments(state, field: str) -> dict[tuple, np.ndarray]:
    """{parameter path: value} of the `field` ('mu', 'nu', 'trace') moments in a state."""
    found = {}
    for path, value in jax.tree_util.tree_leaves_with_path(state):
        names = [getattr(key, "name", None) or getattr(key, "key", None) for key in path]
        if field in names:
            found[tuple(names[names.index(field) + 1 :])] = np.asarray(value)
    return found


KERNEL = ("hidden_0", "linear", "kernel")
GAMMA_BETA = (("hidden_0", "norm", "scale"), ("hidden_0", "norm", "bias"))  # invariant: projected


@pytest.mark.parametrize(
    "name, fields, rate", [("adam", ("mu", "nu"), 0.3), ("momentum", ("trace",), 30.0)]
)
def test_rescaled_moments_are_expressed_at_the_projected_scale(name, fields, rate):
    """'rescale': a projected tensor's first moments divided by c and its second by c², c the
    factor the projection applied (NumPy, from the update without NaP); 'keep' leaves them; the
    output layer's moments are the same in all three."""
    plain_update, (plain,) = _states(name, False, learning_rate=rate)
    _, (kept,) = _states(name, True, "keep", learning_rate=rate)
    _, (rescaled,) = _states(name, True, "rescale", learning_rate=rate)
    start = traverse_util.flatten_dict(jax.device_get(PARAMS))
    step = traverse_util.flatten_dict(plain_update)

    def factor(paths):  # ρ / ‖θ + u‖ of a group, jointly over its tensors (float64)
        before = np.concatenate([np.asarray(start[p], np.float64).ravel() for p in paths])
        moved = np.concatenate([np.asarray(start[p] + step[p], np.float64).ravel() for p in paths])
        return np.linalg.norm(before) / np.linalg.norm(moved)

    c, c_gamma_beta = factor([KERNEL]), factor(GAMMA_BETA)
    assert abs(c - 1) > 1e-2, c  # the step grew the kernel: the projection moved it
    assert abs(c_gamma_beta - 1) > 1e-2, c_gamma_beta
    for field in fields:
        before, kept_m, rescaled_m = (_moments(s, field) for s in (plain, kept, rescaled))
        assert before.keys() == kept_m.keys() == rescaled_m.keys()
        np.testing.assert_array_equal(kept_m[KERNEL], before[KERNEL])
        power = 2 if field == "nu" else 1
        np.testing.assert_allclose(rescaled_m[KERNEL], before[KERNEL] / c**power, rtol=1e-5)
        for path in GAMMA_BETA:  # projected jointly: one factor for γ and β
            np.testing.assert_allclose(
                rescaled_m[path], before[path] / c_gamma_beta**power, rtol=1e-5, atol=1e-12
            )
        np.testing.assert_array_equal(
            rescaled_m[("output", "kernel")], before[("output", "kernel")]
        )


def test_reset_moments_are_zeroed_at_projecting_steps_only():
    """'reset' with a period of 2: the first step (no projection) keeps every moment, the second
    zeroes the projected tensors' and keeps the output layer's."""
    _, kept = _states("adam", True, "keep", period=2, steps=2)
    _, reset = _states("adam", True, "reset", period=2, steps=2)
    for field in ("mu", "nu"):
        for path, value in _moments(kept[0], field).items():
            np.testing.assert_array_equal(_moments(reset[0], field)[path], value)
        second = _moments(reset[1], field)
        assert np.all(second[KERNEL] == 0) and np.any(_moments(kept[1], field)[KERNEL] != 0)
        np.testing.assert_array_equal(
            second[("output", "kernel")], _moments(kept[1], field)[("output", "kernel")]
        )


def test_a_moments_mode_that_does_not_exist_is_one_line():
    config = optim.default_optimizer_config()
    config.nap.update(enabled=True, moments="zero")
    with pytest.raises(ValueError, match=r"^optimizer.nap.moments='zero': expected one of keep, "):
        optim.check_optimizer_config(config)


def test_norm_modules_are_recognised_by_name_and_only_normed_layers_norms_are_grouped():
    """A module named '<anything>_norm' is a norm (a network of your own may call its norms
    'attention_norm'): its γ and β are labelled as such, never as an embedding that NaP's and
    the decay masks would treat otherwise. `norm_layers` (the γ, β groups NaP may project) holds
    only the norms inside normed layers ('hidden_0/norm'), not a transformer's pre-norms or
    final norm, whose output feeds no kernel as a scale-invariant unit."""
    vector = jnp.ones((4,))
    params = {
        "hidden_0": {
            "linear": {"kernel": jnp.ones((3, 4)), "bias": vector},
            "norm": {"scale": vector, "bias": vector},
        },
        "block_0": {
            "attention_norm": {"scale": vector, "bias": vector},
            "pre_mlp_norm": {"scale": vector, "bias": vector},
        },
        "final_norm": {"scale": vector, "bias": vector},
    }
    labels = traverse_util.flatten_dict(param_labels.label_params(params))
    assert labels[("block_0", "attention_norm", "scale")] == "norm_scale"
    assert labels[("block_0", "attention_norm", "bias")] == "norm_offset"
    assert param_labels.norm_layers(params) == {
        "hidden_0/norm": [("hidden_0", "norm", "scale"), ("hidden_0", "norm", "bias")]
    }
