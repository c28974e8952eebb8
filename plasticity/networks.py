"""Network builders: MLP, Nature DQN torso, small CNN, ResNet, pre-norm transformer, value heads.

Every builder takes ``norm ∈ {none, layernorm, rmsnorm, rmsnorm_offset}``, placed before each nonlinearity
(linear without bias → norm → activation), and an activation. Hidden layers are `NormedLayer`s, so
their pre- and post-activations can be read with `hidden_activations` from the same definition.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from plasticity.layers import (
    NormedLayer,
    activation_fn,
    check_activation,
    check_norm,
    make_norm,
    output_layer,
    tiled_max_pool,
)


def _as_float_image(x: jax.Array) -> jax.Array:
    """uint8 pixels in [0, 255] become float32 in [0, 1]; float inputs pass through. Inputs that
    are not batches of images (N, H, W, C) are a one-line ValueError (flattened pixels would
    otherwise fail deep inside a convolution)."""
    if x.ndim < 4:
        raise ValueError(
            f"convolutional networks take images (N, H, W, C), got shape {tuple(x.shape)}: "
            "reshape flat inputs, or use the MLP"
        )
    if x.dtype == jnp.uint8:
        return x.astype(jnp.float32) / 255.0
    return x


class MLP(nn.Module):
    """Multi-layer perceptron: ``hidden_sizes`` normed layers, then a linear output layer.

    ``num_outputs=0`` returns the last hidden features (a torso). Inputs of any rank are flattened
    after the batch axis.
    """

    hidden_sizes: Sequence[int] = (256, 256)
    num_outputs: int = 10
    norm: str = "none"
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = False) -> jax.Array:
        x = x.reshape((x.shape[0], -1))
        for i, width in enumerate(self.hidden_sizes):
            x = NormedLayer(width, self.norm, self.activation, name=f"hidden_{i}")(x)
        if self.num_outputs:
            x = output_layer(self.num_outputs)(x)
        return x


# The Nature DQN torso's (features, kernel, stride) VALID convolutions.
NATURE_CONV_LAYERS = ((32, 8, 4), (64, 4, 2), (64, 3, 1))


def check_valid_convs_fit(
    field: str, input_shape: Sequence[int], layers: Sequence[Sequence[int]]
) -> None:
    """One-line ValueError when the VALID (features, kernel, stride) convolutions ``layers`` leave
    no pixel of an (H, W, ...) input: a kernel wider than the map the layers before it leave (the
    network could not be built: its flattened features would be empty). It names the smallest
    square input the layers fit."""
    height, width = (int(n) for n in input_shape[:2])
    needed = 1
    for _, kernel, stride in reversed(layers):
        needed = (needed - 1) * int(stride) + int(kernel)
    for i, (_, kernel, stride) in enumerate(layers):
        if min(height, width) < kernel:
            where = "" if i == 0 else f" meets a {height}×{width} map"
            raise ValueError(
                f"{field} needs an input of at least {needed}×{needed}, got "
                f"{input_shape[0]}×{input_shape[1]} (layer {i}'s {kernel}×{kernel} kernel{where})"
            )
        height, width = (height - kernel) // stride + 1, (width - kernel) // stride + 1


def check_pooled_convs_fit(field: str, input_shape: Sequence[int], num_layers: int) -> None:
    """One-line ValueError when `SmallCNN`'s ``num_layers`` conv + 2×2 max-pool layers halve an
    (H, W, ...) input below one pixel."""
    smallest = min(int(n) for n in input_shape[:2])
    fit = max(smallest.bit_length() - 1, 0)  # halvings that leave at least one pixel
    if num_layers > fit:
        raise ValueError(
            f"{field}: {num_layers} conv + 2×2 max-pool layers halve the "
            f"{input_shape[0]}×{input_shape[1]} input below one pixel; at most {fit} fit"
        )


class NatureTorso(nn.Module):
    """The convolutional torso of Mnih et al. (2015): conv 32 8×8/4, 64 4×4/2, 64 3×3/1, flatten.

    Takes (B, 84, 84, C) channels-last frames, uint8 or float. The 512-unit layer lives in the value
    head, as in DQN Zoo, so that Rainbow can make it noisy and dueling can split it.
    """

    norm: str = "none"
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = False) -> jax.Array:
        x = _as_float_image(x)
        for i, (features, kernel, stride) in enumerate(NATURE_CONV_LAYERS):
            x = NormedLayer(
                features,
                self.norm,
                self.activation,
                conv=True,
                kernel_size=(kernel, kernel),
                strides=(stride, stride),
                padding="VALID",
                name=f"conv_{i}",
            )(x)
        return x.reshape((x.shape[0], -1))


class SmallCNN(nn.Module):
    """A small CNN for 28×28 / 32×32 images: [conv 3×3 → norm → act → 2×2 max-pool] × len(channels),
    then dense layers and a linear output. ``num_outputs=0`` returns the last hidden features."""

    channels: Sequence[int] = (32, 64)
    dense_sizes: Sequence[int] = (128,)
    num_outputs: int = 10
    norm: str = "none"
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = False) -> jax.Array:
        x = _as_float_image(x)
        for i, features in enumerate(self.channels):
            x = NormedLayer(features, self.norm, self.activation, conv=True, name=f"conv_{i}")(x)
            x = tiled_max_pool(x, (2, 2))
        x = x.reshape((x.shape[0], -1))
        for i, width in enumerate(self.dense_sizes):
            x = NormedLayer(width, self.norm, self.activation, name=f"hidden_{i}")(x)
        if self.num_outputs:
            x = output_layer(self.num_outputs)(x)
        return x


class ResidualBlock(nn.Module):
    """Basic ResNet block: conv → norm → act → conv → norm, plus a (projected) shortcut, then act."""

    features: int
    strides: int = 1
    norm: str = "none"
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = NormedLayer(
            self.features,
            self.norm,
            self.activation,
            conv=True,
            strides=(self.strides, self.strides),
            name="conv_0",
        )(x)
        h = NormedLayer(self.features, self.norm, None, conv=True, name="conv_1")(h)
        shortcut = x
        if x.shape[-1] != self.features or self.strides != 1:
            shortcut = NormedLayer(
                self.features,
                self.norm,
                None,
                conv=True,
                kernel_size=(1, 1),
                strides=(self.strides, self.strides),
                name="shortcut",
            )(x)
        pre = h + shortcut
        self.sow("intermediates", "preact", pre)
        out = activation_fn(self.activation)(pre)
        self.sow("intermediates", "postact", out)
        return out


class ResNet(nn.Module):
    """ResNet with basic blocks; ``stage_sizes=(2, 2, 2, 2), width=64`` is ResNet-18.

    ``small_images=True`` uses the CIFAR stem (3×3 conv, no max-pool); otherwise the ImageNet stem
    (7×7/2 conv and 3×3/2 max-pool). Norm 'none' keeps biases; BatchNorm is deliberately not offered
    (it couples examples, which confounds per-example plasticity measurements).
    """

    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    width: int = 64
    num_outputs: int = 10
    norm: str = "layernorm"
    activation: str = "relu"
    small_images: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = False) -> jax.Array:
        if self.activation == "crelu":
            raise ValueError(
                "CReLU changes the width of residual branches; use it in MLP/CNNs only."
            )
        x = _as_float_image(x)
        if self.small_images:
            x = NormedLayer(self.width, self.norm, self.activation, conv=True, name="stem")(x)
        else:
            x = NormedLayer(
                self.width,
                self.norm,
                self.activation,
                conv=True,
                kernel_size=(7, 7),
                strides=(2, 2),
                name="stem",
            )(x)
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        for stage, num_blocks in enumerate(self.stage_sizes):
            for block in range(num_blocks):
                strides = 2 if stage > 0 and block == 0 else 1
                x = ResidualBlock(
                    self.width * 2**stage,
                    strides,
                    self.norm,
                    self.activation,
                    name=f"stage_{stage}_block_{block}",
                )(x)
        x = jnp.mean(x, axis=(1, 2))
        if self.num_outputs:
            x = output_layer(self.num_outputs)(x)
        return x


class SelfAttention(nn.Module):
    """Causal multi-head self-attention. With a norm, queries and keys are normalized over the
    model width (QK-norm), the normalization before the softmax nonlinearity; it makes the query
    and key kernels scale invariant. Value and output projections write into the residual stream and
    are not scale invariant."""

    num_heads: int
    norm: str = "layernorm"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        batch, length, width = x.shape
        head_dim = width // self.num_heads
        split = lambda t: t.reshape(batch, length, self.num_heads, head_dim)
        q = split(NormedLayer(width, self.norm, None, name="query")(x))
        k = split(NormedLayer(width, self.norm, None, name="key")(x))
        v = split(nn.Dense(width, name="value")(x))
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(head_dim)
        mask = jnp.tril(jnp.ones((length, length), bool))
        logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
        attention = jax.nn.softmax(logits, axis=-1)
        out = jnp.einsum("bhqk,bkhd->bqhd", attention, v).reshape(batch, length, width)
        return nn.Dense(width, name="attention_output_proj")(out)


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attn(norm(x)); x + W₂ act(norm(W₁ norm(x)))."""

    num_heads: int
    mlp_ratio: int = 4
    norm: str = "layernorm"
    activation: str = "gelu"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        width = x.shape[-1]
        pre_attention = make_norm(self.norm, name="pre_attention_norm")
        h = pre_attention(x) if pre_attention is not None else x
        x = x + SelfAttention(self.num_heads, self.norm, name="attention")(h)
        pre_mlp = make_norm(self.norm, name="pre_mlp_norm")
        h = pre_mlp(x) if pre_mlp is not None else x
        h = NormedLayer(width * self.mlp_ratio, self.norm, self.activation, name="mlp_hidden")(h)
        return x + nn.Dense(width, name="mlp_proj")(h)


class Transformer(nn.Module):
    """A small causal pre-norm transformer language model (token ids → next-token logits)."""

    vocab_size: int = 256
    max_length: int = 128
    num_layers: int = 2
    width: int = 128
    num_heads: int = 4
    mlp_ratio: int = 4
    norm: str = "layernorm"
    activation: str = "gelu"

    @nn.compact
    def __call__(self, tokens: jax.Array, deterministic: bool = False) -> jax.Array:
        if self.activation == "crelu":
            raise ValueError("CReLU changes the MLP width; use it in MLP/CNNs only.")
        if self.width % self.num_heads:
            raise ValueError(f"width {self.width} is not divisible by num_heads {self.num_heads}.")
        length = tokens.shape[1]
        x = nn.Embed(self.vocab_size, self.width, name="token_embedding")(tokens)
        x = (
            x
            + self.param(
                "position_embedding", nn.initializers.normal(0.02), (self.max_length, self.width)
            )[:length]
        )
        for i in range(self.num_layers):
            x = TransformerBlock(
                self.num_heads, self.mlp_ratio, self.norm, self.activation, name=f"block_{i}"
            )(x)
        final = make_norm(self.norm, name="final_norm")
        if final is not None:
            x = final(x)
        return output_layer(self.vocab_size)(x)


class ValueOutputs(NamedTuple):
    """What a value head returns: Q-values (B, A) and, for a distributional head, logits (B, A, K)."""

    q_values: jax.Array
    logits: jax.Array | None = None


class ValueHead(nn.Module):
    """Q-value head covering DQN, dueling, C51 and noisy variants.

    ``hidden_sizes`` normed layers (the Nature network's 512 units) feed the outputs; with
    ``dueling`` the value and advantage streams each get their own hidden layers. With
    ``num_atoms > 1`` the outputs are per-action logits over a fixed support, and Q is their mean.
    ``noisy`` makes every layer of the head a per-sample factorised-Gaussian noisy layer.
    """

    num_actions: int
    hidden_sizes: Sequence[int] = (512,)
    dueling: bool = False
    num_atoms: int = 1
    v_min: float = -10.0
    v_max: float = 10.0
    noisy: bool = False
    noisy_sigma_init: float = 0.5
    norm: str = "none"
    activation: str = "relu"

    def _stream(self, x: jax.Array, features: int, prefix: str, deterministic: bool) -> jax.Array:
        for i, width in enumerate(self.hidden_sizes):
            x = NormedLayer(
                width,
                self.norm,
                self.activation,
                noisy=self.noisy,
                noisy_sigma_init=self.noisy_sigma_init,
                name=f"{prefix}hidden_{i}",
            )(x, deterministic=deterministic)
        name = f"output_{prefix[:-1]}" if prefix else "output"
        out = output_layer(features, self.noisy, self.noisy_sigma_init, name=name)
        return out(x, deterministic=deterministic) if self.noisy else out(x)

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = False) -> ValueOutputs:
        atoms = self.num_atoms
        if self.dueling:
            value = self._stream(x, atoms, "value_", deterministic).reshape(-1, 1, atoms)
            advantage = self._stream(x, self.num_actions * atoms, "advantage_", deterministic)
            advantage = advantage.reshape(-1, self.num_actions, atoms)
            out = value + advantage - jnp.mean(advantage, axis=1, keepdims=True)
        else:
            out = self._stream(x, self.num_actions * atoms, "", deterministic)
            out = out.reshape(-1, self.num_actions, atoms)
        if atoms == 1:
            return ValueOutputs(q_values=out[..., 0])
        support = jnp.linspace(self.v_min, self.v_max, atoms)
        q_values = jnp.sum(jax.nn.softmax(out, axis=-1) * support, axis=-1)
        return ValueOutputs(q_values=q_values, logits=out)


class QNetwork(nn.Module):
    """A torso (module returning flat features) followed by a `ValueHead`."""

    torso: nn.Module
    head: ValueHead

    def __call__(self, x: jax.Array, deterministic: bool = False) -> ValueOutputs:
        return self.head(self.torso(x, deterministic=deterministic), deterministic=deterministic)


def hidden_activations(
    model: nn.Module, variables: Any, x: jax.Array, **apply_kwargs
) -> tuple[Any, dict[str, dict[str, jax.Array]]]:
    """Runs `model` once and returns (outputs, {layer path: {'preact': ..., 'postact': ...}}).

    Layer paths are '/'-joined module names (e.g. 'hidden_0', 'torso/conv_2'). This is the single
    forward pass used by the diagnostics: no second network definition is needed.
    """
    outputs, state = model.apply(variables, x, mutable=["intermediates"], **apply_kwargs)
    flat = traverse_util.flatten_dict(state.get("intermediates", {}), sep="/")  # none: no layer
    layers: dict[str, dict[str, jax.Array]] = {}
    for path, value in flat.items():
        layer, kind = path.rsplit("/", 1)
        layers.setdefault(layer, {})[kind] = value[0]
    return outputs, layers


def parameter_count(params: Any) -> int:
    """Total number of scalars in a parameter pytree."""
    return sum(int(leaf.size) for leaf in jax.tree_util.tree_leaves(params))


def validate_architecture(norm: str, activation: str) -> None:
    """Raises a one-line ValueError for an unknown norm or activation."""
    check_norm(norm)
    check_activation(activation)


# How the plain linear and convolution layers start (`initialize`): Flax's own LeCun-normal
# kernels with zero biases, U(±1/√fan_in) kernels and biases, or Kaiming-uniform kernels.
INITIALIZATIONS = ("lecun_normal", "fan_in_uniform", "kaiming_uniform")


def check_initialization(name: str) -> str:
    """Returns `name` if it is a known initialization, else raises a one-line ValueError."""
    if name not in INITIALIZATIONS:
        raise ValueError(
            f"Unknown initialization {name!r}: expected one of {', '.join(INITIALIZATIONS)}."
        )
    return name


def initialize(name: str, params: Any, key: jax.Array) -> Any:
    """`params` (as a builder's ``init`` made them) under the initialization called `name`.

    'lecun_normal' returns them as they are: Flax's default, N(0, 1/fan_in) truncated kernels and
    zero biases. 'fan_in_uniform' redraws the kernel and the bias of every plain linear and
    convolution layer from U(±1/√fan_in), fan_in being the kernel's inputs (kernel height × width
    × channels for a convolution): DQN Zoo's initialization, and PyTorch's default for
    `nn.Linear` and `nn.Conv2d`. Its kernels have 1/√3 of LeCun-normal's standard
    deviation, so their norms (NaP's targets, the effective learning rate η/‖W‖) start about 1.73×
    smaller. 'kaiming_uniform' is Dohare et al.'s (their code's PyTorch `kaiming_uniform_`, for
    ReLU networks): hidden kernels U(±√(6/fan_in)), output kernels U(±√(3/fan_in)), zero biases.
    Norm parameters (γ, β) and noisy layers (whose means are already drawn U(±1/√fan_in)) are
    left as they are.
    """
    if check_initialization(name) == "lecun_normal":
        return params
    flat = traverse_util.flatten_dict(params)
    modules = sorted({path[:-1] for path in flat if path[-1] == "kernel"})
    redrawn = dict(flat)
    for index, module in enumerate(modules):
        if module + ("sigma_kernel",) in flat:  # a noisy layer
            continue
        fan_in = float(np.prod(flat[module + ("kernel",)].shape[:-1]))
        bounds = {"kernel": 1.0 / np.sqrt(fan_in), "bias": 1.0 / np.sqrt(fan_in)}
        if name == "kaiming_uniform":
            gain = 1.0 if module[-1].startswith("output") else np.sqrt(2.0)
            bounds = {"kernel": gain * np.sqrt(3.0 / fan_in), "bias": 0.0}
        for leaf, leaf_key in zip(bounds, jax.random.split(jax.random.fold_in(key, index))):
            if module + (leaf,) in flat:
                value, bound = flat[module + (leaf,)], float(bounds[leaf])
                redrawn[module + (leaf,)] = jax.random.uniform(
                    leaf_key, value.shape, value.dtype, -bound, bound
                )
    return traverse_util.unflatten_dict(redrawn)


def with_initialization(init_fn: Callable[[jax.Array, jax.Array], Any], name: str) -> Callable:
    """``init_fn(rng, inputs) -> params`` followed by `initialize` under `name` (`init_fn` itself
    for Flax's 'lecun_normal'): fresh networks drawn as a run's first one was."""
    if check_initialization(name) == "lecun_normal":
        return init_fn
    return lambda rng, inputs: initialize(name, init_fn(rng, inputs), jax.random.fold_in(rng, 1))
