"""plasticity.layers.PatchConv: flax's convolution computed as patch products, chosen for
compiled loops on CPUs. Same parameters, same results up to float32 summation order."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plasticity import layers, runtime

CASES = [
    # (input shape, kernel size, strides, padding)
    ((6, 10, 10, 4), (3, 3), (1, 1), "SAME"),  # MinAtar's torso
    ((3, 84, 84, 4), (8, 8), (4, 4), "VALID"),  # the Nature CNN's first layer
    ((2, 3, 9, 9, 5), (3, 3), (2, 2), "SAME"),  # extra leading axes, odd size, stride 2
    ((4, 7, 7, 3), (2, 2), (1, 1), "SAME"),  # even kernel: asymmetric padding
]


def _conv(x, kernel, strides, padding):
    return jax.lax.conv_general_dilated(
        x.reshape((-1,) + x.shape[-3:]),
        kernel,
        strides,
        padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=jax.lax.Precision.HIGHEST,
    )


@pytest.mark.parametrize("shape,size,strides,padding", CASES)
def test_patch_conv_is_flax_conv_up_to_summation_order(shape, size, strides, padding):
    x = jax.random.normal(jax.random.key(0), shape)
    flax_conv = nn.Conv(6, size, strides, padding=padding)
    patch_conv = layers.PatchConv(6, size, strides, padding=padding)
    params = flax_conv.init(jax.random.key(1), x)
    # The same parameter names, shapes and initial values: checkpoints and diagnostics carry over.
    patch_params = patch_conv.init(jax.random.key(1), x)
    jax.tree.map(np.testing.assert_array_equal, params, patch_params)

    def outputs_and_kernel_gradient(module):
        def loss(p):
            y = module.apply(p, x)
            return jnp.sum(jnp.sin(y)), y

        (_, y), grads = jax.value_and_grad(loss, has_aux=True)(params)
        return y, grads["params"]["kernel"]

    y_flax, g_flax = outputs_and_kernel_gradient(flax_conv)
    y_patch, g_patch = outputs_and_kernel_gradient(patch_conv)
    assert y_patch.shape == y_flax.shape
    # Two float32 sums of the same K = kh*kw*in products differ by at most ~2*K*eps times the sum
    # of the products' magnitudes: a bound from the data, not a guess at the noise.
    eps = np.finfo(np.float32).eps
    terms = size[0] * size[1] * shape[-1]
    kernel = params["params"]["kernel"]
    magnitude = _conv(jnp.abs(x), jnp.abs(kernel), strides, padding).reshape(y_flax.shape)
    assert np.all(np.abs(y_patch - y_flax) <= 2 * terms * eps * magnitude + 1e-6)
    # Kernel gradients sum over every output position and example: compare relative to their
    # largest entry, with the same bound over the number of summed positions.
    positions = int(np.prod(y_flax.shape[:-1]))
    scale = float(jnp.max(jnp.abs(g_flax)))
    np.testing.assert_allclose(g_patch, g_flax, atol=2 * positions * eps * scale, rtol=0)


@pytest.mark.parametrize(
    "shape,size,strides,padding",
    [case for case in CASES if len(case[0]) == 4]
    + [((2, 9, 8, 2), (3, 2), (2, 3), ((1, 2), (0, 1)))],  # explicit, uneven padding
)
def test_image_patches_are_xlas_patches_exactly(shape, size, strides, padding):
    """The slices gather XLA's patch values bit for bit, features in (kh, kw, in) order."""
    x = jax.random.normal(jax.random.key(0), shape)
    xla = jax.lax.conv_general_dilated_patches(
        x, size, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    *positions, _ = xla.shape
    channels, taps = shape[-1], size[0] * size[1]
    expected = xla.reshape(*positions, channels, taps).swapaxes(-1, -2).reshape(xla.shape)
    np.testing.assert_array_equal(layers.image_patches(x, size, strides, padding), expected)


@pytest.mark.parametrize("shape", [(3, 8, 8, 5), (2, 7, 9, 3), (2, 4, 6, 6, 2)])
def test_tiled_max_pool_is_flax_max_pool(shape):
    """Same values (odd sizes drop the last row or column, as 'VALID' pooling does) and, with no
    ties (random normals), the same gradient."""
    x = jax.random.normal(jax.random.key(0), shape)
    expected = nn.max_pool(x, (2, 2), strides=(2, 2))
    np.testing.assert_array_equal(layers.tiled_max_pool(x, (2, 2)), expected)
    weights = jax.random.normal(jax.random.key(1), expected.shape)
    gradient = lambda pool: jax.grad(lambda x: jnp.sum(weights * pool(x)))(x)
    np.testing.assert_array_equal(
        gradient(lambda x: layers.tiled_max_pool(x, (2, 2))),
        gradient(lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))),
    )


@pytest.mark.parametrize("shape,size,strides,padding", CASES)
def test_patch_conv_input_gradient_is_flax_convs(shape, size, strides, padding):
    """The gradient a layer passes down (the slices' transpose) is the convolution's."""
    x = jax.random.normal(jax.random.key(0), shape)
    features = 6
    flax_conv = nn.Conv(features, size, strides, padding=padding)
    params = flax_conv.init(jax.random.key(1), x)

    def input_gradient(module):
        return jax.grad(lambda x: jnp.sum(jnp.sin(module.apply(params, x))))(x)

    g_flax = input_gradient(flax_conv)
    g_patch = input_gradient(layers.PatchConv(features, size, strides, padding=padding))
    # An input lies in at most ceil(kh/sh) * ceil(kw/sw) windows, so its gradient sums at most
    # that many times `features` products |cos(y)| * |w| <= max |w|. Two float32 sums of n such
    # terms differ by at most 2 * (2 n eps) * (n max |w|): a bound from the data.
    windows = math.ceil(size[0] / strides[0]) * math.ceil(size[1] / strides[1])
    terms = windows * features
    largest_weight = float(jnp.max(jnp.abs(params["params"]["kernel"])))
    bound = 4 * terms * np.finfo(np.float32).eps * terms * largest_weight
    np.testing.assert_allclose(g_patch, g_flax, atol=bound, rtol=0)
    assert float(jnp.max(jnp.abs(g_flax))) > 100 * bound  # the bound is far below the values


def test_auto_picks_patches_only_inside_compiled_loops_on_cpu(monkeypatch):
    monkeypatch.delenv("PLASTICITY_CONV", raising=False)
    small, large = 2**20, layers.PATCH_BYTES_LIMIT + 1
    assert layers.conv_implementation("auto", small) == "xla"
    with runtime.compiled_loop_lowering():
        expected = "patches" if jax.default_backend() == "cpu" else "xla"
        assert layers.conv_implementation("auto", small) == expected
        assert layers.conv_implementation("auto", large) == "xla"  # memory first
        assert layers.conv_implementation("xla", small) == "xla"  # an explicit choice stands
    assert layers.conv_implementation("auto", small) == "xla"  # the context is left
    monkeypatch.setenv("PLASTICITY_CONV", "patches")
    assert layers.conv_implementation("auto", large) == "patches"
    monkeypatch.setenv("PLASTICITY_CONV", "fast")
    with pytest.raises(ValueError, match="PLASTICITY_CONV"):
        layers.conv_implementation("auto", small)
    with pytest.raises(ValueError, match="Unknown convolution implementation 'cudnn'"):
        layers.conv_implementation("cudnn", small)


def test_normed_layer_inside_a_loop_lowering_keeps_its_parameters_and_function(monkeypatch):
    monkeypatch.delenv("PLASTICITY_CONV", raising=False)
    layer = layers.NormedLayer(8, "layernorm", conv=True)
    x = jax.random.normal(jax.random.key(0), (4, 10, 10, 3))
    params = layer.init(jax.random.key(1), x)
    outside = jax.jit(layer.apply)(params, x)
    with runtime.compiled_loop_lowering():
        inside_params = layer.init(jax.random.key(1), x)
        inside = jax.jit(lambda p, x: layer.apply(p, x)).lower(params, x).compile()(params, x)
    jax.tree.map(np.testing.assert_array_equal, params, inside_params)
    # LayerNorm'd outputs of O(1): summation-order differences stay far below 1e-4.
    np.testing.assert_allclose(inside, outside, atol=1e-4, rtol=0)
