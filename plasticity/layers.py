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

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

NORMS = ("none", "layernorm", "rmsnorm")
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
    return None


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
        if self.use_bias:
            y = y + self.param("bias", uniform, (self.features,))
        if deterministic:
            return y
        sigma_bias = self.param("sigma_bias", sigma, (self.features,)) if self.use_bias else None
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


class NormedLayer(nn.Module):
    """linear → norm → activation, recording the pre- and post-activations.

    The linear map has no bias when a norm follows it (the norm's offset makes it redundant).
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

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = False) -> jax.Array:
        use_bias = check_norm(self.norm) == "none"
        if self.conv:
            if self.noisy:
                raise ValueError("Noisy layers are dense layers; a convolution cannot be noisy.")
            h = nn.Conv(
                self.features,
                tuple(self.kernel_size),
                tuple(self.strides),
                padding=self.padding,
                use_bias=use_bias,
                name="linear",
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
