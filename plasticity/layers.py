"""Building blocks shared by every network: norms, activations, the normed layer, noisy dense.

The one structural convention the rest of the library relies on: a hidden layer is a
`NormedLayer` module whose children are called ``linear`` (a Dense, Conv or NoisyDense) and, when
a normalization is requested, ``norm``. A kernel whose module has a ``norm`` sibling feeds a
normalization layer and is therefore scale invariant; `plasticity.param_labels` finds those
kernels by this naming alone, so NaP, weight-decay masks and per-layer diagnostics work for every
network built from these blocks without a second description of the architecture. Output layers
are modules whose name starts with ``output``.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

NORMS = ("none", "layernorm", "rmsnorm", "rmsnorm_offset")
ACTIVATIONS = ("relu", "leaky_relu", "gelu", "tanh", "crelu", "identity")

# flax's default epsilon, named here because the NaP invariance tests bound errors by it.
NORM_EPSILON = 1e-6


def check_norm(norm: str) -> str:
    """Returns `norm` if it is a known normalization, else raises a one-line ValueError."""
    if norm not in NORMS:
        raise ValueError(f"Unknown norm {norm!r}: expected one of {', '.join(NORMS)}.")
    return norm


def check_activation(activation: str) -> str:
    """Returns `activation` if it is known, else raises a one-line ValueError."""
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"Unknown activation {activation!r}: expected one of {', '.join(ACTIVATIONS)}."
        )
    return activation


def crelu(x: jax.Array) -> jax.Array:
    """Concatenated ReLU (Shang et al. 2016): [relu(x), relu(-x)], doubling the feature axis."""
    return jnp.concatenate([nn.relu(x), nn.relu(-x)], axis=-1)


def activation_fn(name: str, negative_slope: float = 0.01) -> Callable[[jax.Array], jax.Array]:
    """The activation function called `name`."""
    check_activation(name)
    return {
        "relu": nn.relu,
        "leaky_relu": lambda x: nn.leaky_relu(x, negative_slope),
        "gelu": nn.gelu,
        "tanh": jnp.tanh,
        "crelu": crelu,
        "identity": lambda x: x,
    }[name]


def activation_width_multiplier(name: str) -> int:
    """How many output features an activation makes per input feature (2 for CReLU)."""
    return 2 if name == "crelu" else 1


def make_norm(norm: str, name: str = "norm") -> nn.Module | None:
    """The normalization module over the feature (last) axis, or None for ``norm='none'``."""
    check_norm(norm)
    if norm == "layernorm":
        return nn.LayerNorm(epsilon=NORM_EPSILON, name=name)
    if norm == "rmsnorm":
        return nn.RMSNorm(epsilon=NORM_EPSILON, name=name)
    if norm == "rmsnorm_offset":
        return RMSNormWithOffset(epsilon=NORM_EPSILON, name=name)
    return None


class RMSNormWithOffset(nn.Module):
    """RMSNorm followed by a learned offset: y = γ ⊙ x / √(mean(x²) + ε) + β (γ = 1, β = 0 at init).

    LayerNorm without the centring. Plain RMSNorm has no β, and with the linear bias removed in
    front of a norm an RMSNorm hidden layer has no additive term at all (odd before its
    activation); β restores one after the norm, where it leaves the kernel scale invariant. The
    leaves are named ``scale`` and ``bias`` like LayerNorm's, so NaP's (γ, β) modes, weight-decay
    masks and diagnostics treat them alike (`plasticity.param_labels`).
    """

    epsilon: float = NORM_EPSILON

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,))
        offset = self.param("bias", nn.initializers.zeros, (features,))
        mean_square = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
        return x * jax.lax.rsqrt(mean_square + self.epsilon) * scale + offset


def _signed_sqrt(x: jax.Array) -> jax.Array:
    return jnp.sign(x) * jnp.sqrt(jnp.abs(x))


class NoisyDense(nn.Module):
    """Factorised-Gaussian noisy linear layer (Fortunato et al. 2018) with noise drawn per sample.

    y = x·μ_W + ((x ⊙ f(ε_in)) · σ_W) ⊙ f(ε_out) + μ_b + σ_b ⊙ f(ε_out), f(ε) = sign(ε)√|ε|.
    Unlike implementations that draw one (ε_in, ε_out) pair per batch, every sample along the
    leading axes gets its own pair, at the cost of one extra matrix product, so a batch of
    transitions is not perturbed by one shared network. Noise comes from the ``'noise'`` RNG
    stream; ``deterministic=True`` uses the means only (evaluation).
    """

    features: int
    use_bias: bool = True
    sigma_init: float = 0.5

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = False) -> jax.Array:
        fan_in = x.shape[-1]
        bound = 1.0 / jnp.sqrt(fan_in)
        uniform = lambda key, shape: jax.random.uniform(key, shape, minval=-bound, maxval=bound)
        sigma = lambda key, shape: jnp.full(shape, self.sigma_init / jnp.sqrt(fan_in), jnp.float32)
        kernel = self.param("kernel", uniform, (fan_in, self.features))
        sigma_kernel = self.param("sigma_kernel", sigma, (fan_in, self.features))
        y = x @ kernel
        sigma_bias = None
        if self.use_bias:
            y = y + self.param("bias", uniform, (self.features,))
            # Created whatever ``deterministic`` says, so the parameters are the same both ways.
            sigma_bias = self.param("sigma_bias", sigma, (self.features,))
        if deterministic:
            return y
        return y + factorised_noise(x, sigma_kernel, sigma_bias, self.make_rng("noise"))


def factorised_noise(
    x: jax.Array, sigma_kernel: jax.Array, sigma_bias: jax.Array | None, key: jax.Array
) -> jax.Array:
    """The noise term of a noisy layer with one (ε_in, ε_out) pair per sample of `x`.

    ((x ⊙ f(ε_in)) · σ_W) ⊙ f(ε_out) + σ_b ⊙ f(ε_out): equal to x · (σ_W ⊙ f(ε_in) f(ε_out)ᵀ) per
    sample, without ever forming a per-sample weight matrix.
    """
    key_in, key_out = jax.random.split(key)
    eps_in = _signed_sqrt(jax.random.normal(key_in, x.shape))
    eps_out = _signed_sqrt(jax.random.normal(key_out, x.shape[:-1] + sigma_kernel.shape[-1:]))
    noise = ((x * eps_in) @ sigma_kernel) * eps_out
    if sigma_bias is not None:
        noise = noise + sigma_bias * eps_out
    return noise


CONV_IMPLEMENTATIONS = ("auto", "xla", "patches")
# Patch matrices up to this size make `PatchConv` the choice inside compiled loops on CPUs.
PATCH_BYTES_LIMIT = 64 * 2**20
_IN_COMPILED_LOOP = contextvars.ContextVar("in_compiled_loop", default=False)


@contextlib.contextmanager
def convolutions_for_compiled_loops():
    """Networks traced inside compute their 'auto' convolutions as patch products on CPUs.

    XLA:CPU computes a convolution's kernel gradient inside a compiled loop (a ``scan``: how the
    MinAtar loop and the continual trainer run) up to 12x slower than outside one; as one matrix
    product (`PatchConv`) the same Adam step runs 4x (MinAtar's conv) to 19-33x (the continual
    trainer's CNN) faster in the loop (`python -m benchmarks.conv_in_loops`). Outside loops XLA's
    convolution is the faster of the two (the Atari learner's update, called once per step, keeps
    it: 19-20.5 ms against 49-64 ms as patch products). Trainers wrap the lowering of their loop
    programs in this (`plasticity.runtime.compiled_loop_lowering`).
    """
    token = _IN_COMPILED_LOOP.set(True)
    try:
        yield
    finally:
        _IN_COMPILED_LOOP.reset(token)


def conv_implementation(requested: str, patch_bytes: int) -> str:
    """'xla' or 'patches' for a convolution whose patch matrix would take ``patch_bytes``.

    'auto' picks 'patches' inside `convolutions_for_compiled_loops` on CPUs when the patch matrix
    stays under `PATCH_BYTES_LIMIT` (a ResNet on 32x32 images at batch 128 would need ~300 MB per
    layer), XLA's convolution otherwise. The environment variable ``PLASTICITY_CONV`` (xla or
    patches) overrides 'auto', for side-by-side measurements.
    """
    if requested not in CONV_IMPLEMENTATIONS:
        raise ValueError(
            f"Unknown convolution implementation {requested!r}: expected one of "
            f"{', '.join(CONV_IMPLEMENTATIONS)}."
        )
    if requested == "auto":
        requested = os.environ.get("PLASTICITY_CONV", "auto")
        if requested not in CONV_IMPLEMENTATIONS:
            raise ValueError(f"PLASTICITY_CONV={requested!r}: expected xla or patches.")
    if requested == "auto":
        loop_on_cpu = _IN_COMPILED_LOOP.get() and jax.default_backend() == "cpu"
        return "patches" if loop_on_cpu and patch_bytes <= PATCH_BYTES_LIMIT else "xla"
    return requested


def image_patches(
    images: jax.Array,
    window: Sequence[int],
    strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
) -> jax.Array:
    """Each output position's receptive field of NHWC ``images``, as (N, H', W', kh * kw * C).

    The values of ``jax.lax.conv_general_dilated_patches(images, window, strides, padding,
    ("NHWC", "HWIO", "NHWC"))`` with the features ordered (kh, kw, in), the order of a flax
    kernel's rows, where that function orders them (in, kh, kw). Gathered by one pad and kh * kw
    strided slices laid side by side: XLA:CPU computes that function as a convolution with a
    one-hot kernel, which inside a compiled loop took 0.28 ms for one 32 x 10 x 10 x 4 batch;
    the slices are copies of whole channel rows that XLA fuses, forward and backward.
    """
    n, height, width, channels = images.shape
    kh, kw = window
    sh, sw = strides
    if isinstance(padding, str):
        padding = jax.lax.padtype_to_pads((height, width), window, strides, padding)
    (top, bottom), (left, right) = padding
    padded = jnp.pad(images, ((0, 0), (top, bottom), (left, right), (0, 0)))
    out_h = (height + top + bottom - kh) // sh + 1
    out_w = (width + left + right - kw) // sw + 1
    taps = [
        jax.lax.slice(
            padded,
            (0, i, j, 0),
            (n, i + (out_h - 1) * sh + 1, j + (out_w - 1) * sw + 1, channels),
            (1, sh, sw, 1),
        )
        for i in range(kh)
        for j in range(kw)
    ]
    return jnp.concatenate(taps, axis=-1)


def tiled_max_pool(x: jax.Array, window: Sequence[int]) -> jax.Array:
    """Max over non-overlapping ``window`` tiles of NHWC ``x`` (strides = window, 'VALID').

    The values of ``flax.linen.max_pool(x, window, strides=window)``, taken as a reshape and a
    max instead of XLA's ``reduce_window``, which XLA:CPU runs element by element (3.3 ms for a
    2x2 pool of a 32 x 32 x 32 x 32 batch, against a fused reduction here). Rows and columns
    past the last whole tile are dropped, as 'VALID' pooling drops them. The gradient differs
    only at ties within a tile, which it splits evenly where ``reduce_window`` gives it to one.
    """
    *lead, height, width, channels = x.shape
    th, tw = window
    rows, cols = height // th, width // tw
    x = x[..., : rows * th, : cols * tw, :]
    return x.reshape(*lead, rows, th, cols, tw, channels).max(axis=(-4, -2))


class PatchConv(nn.Module):
    """A 2-D convolution computed as image patches times the kernel matrix.

    The parameters (``kernel`` of shape (kh, kw, in, out), ``bias``), their initialisation and the
    result are `flax.linen.Conv`'s (NHWC, padding 'SAME', 'VALID' or explicit pairs), so the two
    are interchangeable in a checkpoint and to every diagnostic and intervention; only the
    lowering differs: `image_patches` gathers each output position's receptive field, and one
    matrix product with the reshaped kernel does the rest, forward and backward.
    Results equal XLA's convolution up to float32 summation order.
    """

    features: int
    kernel_size: Sequence[int]
    strides: Sequence[int] = (1, 1)
    padding: str | Sequence[tuple[int, int]] = "SAME"
    use_bias: bool = True
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kh, kw = self.kernel_size
        channels = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (kh, kw, channels, self.features))
        images = x.reshape((-1,) + x.shape[-3:]).astype(jnp.result_type(x.dtype, jnp.float32))
        patches = image_patches(images, (kh, kw), tuple(self.strides), self.padding)
        matrix = kernel.reshape(kh * kw * channels, self.features)  # rows ordered (kh, kw, in)
        y = patches @ matrix
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (self.features,))
        return y.reshape(x.shape[:-3] + y.shape[1:])


def _patch_bytes(x: jax.Array, kernel_size: Sequence[int], strides: Sequence[int]) -> int:
    """Bytes of the float32 patch matrix of a convolution of ``x`` (an upper bound: 'SAME')."""
    *lead, height, width, channels = x.shape
    rows = math.prod(lead) * math.ceil(height / strides[0]) * math.ceil(width / strides[1])
    return 4 * rows * channels * math.prod(kernel_size)


class NormedLayer(nn.Module):
    """linear → norm → activation, recording the pre- and post-activations.

    The linear map has no bias when a norm follows it (LayerNorm's offset makes it redundant;
    plain RMSNorm has none, so an ``rmsnorm`` layer has no additive term, as in NaP's block;
    ``rmsnorm_offset`` adds β after the norm).
    ``activation=None`` stops after the norm (a residual branch adds something first).
    Pre-/post-activations are sown into the ``'intermediates'`` collection, which costs nothing
    unless the caller asks for that collection to be mutable (see `networks.hidden_activations`).
    """

    features: int
    norm: str = "none"
    activation: str | None = "relu"
    conv: bool = False
    kernel_size: Sequence[int] = (3, 3)
    strides: Sequence[int] = (1, 1)
    padding: str = "SAME"
    noisy: bool = False
    noisy_sigma_init: float = 0.5
    negative_slope: float = 0.01
    conv_impl: str = "auto"  # 'auto', 'xla' or 'patches': see `conv_implementation`

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = False) -> jax.Array:
        use_bias = check_norm(self.norm) == "none"
        if self.conv:
            if self.noisy:
                raise ValueError("Noisy layers are dense layers; a convolution cannot be noisy.")
            size, strides = tuple(self.kernel_size), tuple(self.strides)
            impl = conv_implementation(self.conv_impl, _patch_bytes(x, size, strides))
            conv = PatchConv if impl == "patches" else nn.Conv
            h = conv(
                self.features, size, strides, padding=self.padding, use_bias=use_bias, name="linear"
            )(x)
        elif self.noisy:
            h = NoisyDense(
                self.features, use_bias=use_bias, sigma_init=self.noisy_sigma_init, name="linear"
            )(x, deterministic=deterministic)
        else:
            h = nn.Dense(self.features, use_bias=use_bias, name="linear")(x)
        norm = make_norm(self.norm)
        if norm is not None:
            h = norm(h)
        if self.activation is None:
            return h
        self.sow("intermediates", "preact", h)
        y = activation_fn(self.activation, self.negative_slope)(h)
        self.sow("intermediates", "postact", y)
        return y


def output_layer(
    features: int, noisy: bool = False, noisy_sigma_init: float = 0.5, name: str = "output"
) -> nn.Module:
    """The final (never normalized, never projected) linear layer; its name marks it as output."""
    if not name.startswith("output"):
        raise ValueError(f"Output layer names must start with 'output', got {name!r}.")
    if noisy:
        return NoisyDense(features, sigma_init=noisy_sigma_init, name=name)
    return nn.Dense(features, name=name)
