"""The DQN / Rainbow learner as pure, jittable functions over a `TrainState`.

``make_learner(config, num_actions)`` returns a `Learner` whose functions close over the network
and the optimizer and touch nothing else, so the same learner serves the host-driven Atari loop,
a fully jitted ``lax.scan`` loop (MinAtar), ``vmap`` over seeds and ``jit`` with shardings:

* ``init(rng, obs_spec) -> TrainState``: online parameters, optimizer state (NaP reference norms
  included) and ``extra['target_params']``, a copy of the online parameters.
* ``update(state, batch, weights, rng) -> (state, aux)``: one gradient step on
  ``mean(weights * per-example loss)`` for a replay batch (keys ``obs_tm1, a_tm1, r_t,
  discount_t, obs_t``; n-step returns and discounts already folded in by the replay), then a copy
  of the online parameters into the target ones every ``target_update_period`` updates. ``aux``
  holds scalars (loss, q statistics, the global gradient norm unless ``learner.grad_norm`` is
  False, learning rate, whether the target was copied) and, under ``aux['per_example']``, the
  (B,) priorities, TD errors and Q(o_tm1, a_tm1).
* ``act(params, obs, rng, epsilon, deterministic=False, extra=None) -> actions``: epsilon-greedy
  over a batch of observations; with noisy nets each observation gets its own noise sample, and
  ``deterministic=True`` uses the mean weights.

With ``intervention.name='plasticity_injection'`` every network evaluation goes through
`plasticity.interventions.injected_apply` with the train state's ``extra`` (the frozen head and
its initial copy), so the injected network h_θ + h_θ' − h_θ'₀ acts, learns and is the target; it
runs the network three times, from the start of the run.

Every Rainbow component is a config toggle: ``network.dueling``, ``network.num_atoms`` (C51 when
> 1), ``network.noisy``, ``learner.double_q``, ``learner.n_step`` and ``replay.prioritized`` (the
last two act through the replay, see `make_learn_step`). Noise for the three network evaluations
of an update (online at o_tm1, target at o_t, online selector at o_t) comes from independent keys.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from agents import losses
from agents.configs import target_update_period_updates
from agents.replay import ReplayState, replay_init, replay_sample, replay_update_priorities
from plasticity.interventions import injected_apply
from plasticity.layers import NormedLayer
from plasticity.nap import check_nap_config, scale_invariant_norms
from plasticity.networks import (
    MLP,
    NATURE_CONV_LAYERS,
    NatureTorso,
    QNetwork,
    ValueHead,
    ValueOutputs,
    check_initialization,
    check_valid_convs_fit,
    initialize,
)
from plasticity.optim import make_optimizer, optimizer_learning_rate
from plasticity.train_state import TrainState, apply_gradients, create_train_state

Batch = dict[str, jax.Array]


class ConvTorso(nn.Module):
    """A stack of VALID convolutions given as (features, kernel, stride), then flatten.

    With ``((32, 8, 4), (64, 4, 2), (64, 3, 1))`` it is the Nature torso; smaller stacks serve tests
    and small-screen games. Layers are `NormedLayer`s, so norms, NaP and diagnostics apply.
    """

    layers: Sequence[Sequence[int]]
    norm: str = "none"
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = False) -> jax.Array:
        for i, (features, kernel, stride) in enumerate(self.layers):
            x = NormedLayer(
                int(features),
                self.norm,
                self.activation,
                conv=True,
                kernel_size=(int(kernel), int(kernel)),
                strides=(int(stride), int(stride)),
                padding="VALID",
                name=f"conv_{i}",
            )(x)
        return x.reshape((x.shape[0], -1))


def check_torso_fits(network: ml_collections.ConfigDict, observation_shape: Sequence[int]) -> None:
    """One-line ValueError when the torso's convolutions leave no pixel of an (H, W, C)
    observation (a conv stack made for larger screens, a smaller ``env.screen_size``)."""
    if network.torso == "nature":
        check_valid_convs_fit("the nature torso", observation_shape, NATURE_CONV_LAYERS)
    elif network.torso == "conv":
        check_valid_convs_fit("network.conv_layers", observation_shape, network.conv_layers)


def build_network(network: ml_collections.ConfigDict, num_actions: int) -> QNetwork:
    """The Q-network of ``config.network``: a torso (nature, conv or mlp) and a `ValueHead`."""
    if network.torso == "nature":
        torso = NatureTorso(norm=network.norm, activation=network.activation)
    elif network.torso == "conv":
        layers = tuple(tuple(int(v) for v in layer) for layer in network.conv_layers)
        torso = ConvTorso(layers, norm=network.norm, activation=network.activation)
    elif network.torso == "mlp":
        torso = MLP(
            tuple(network.mlp_sizes),
            num_outputs=0,
            norm=network.norm,
            activation=network.activation,
        )
    else:
        raise ValueError(f"unknown torso {network.torso!r}: expected nature, conv or mlp")
    head = ValueHead(
        num_actions=num_actions,
        hidden_sizes=tuple(network.hidden_sizes),
        dueling=network.dueling,
        num_atoms=network.num_atoms,
        v_min=network.v_min,
        v_max=network.v_max,
        noisy=network.noisy,
        noisy_sigma_init=network.noisy_sigma_init,
        norm=network.norm,
        activation=network.activation,
    )
    return QNetwork(torso=torso, head=head)


def preprocess_observations(obs: jax.Array) -> jax.Array:
    """uint8 pixels -> float32 in [0, 1]; bool or float observations -> float32 as they are."""
    if obs.dtype == jnp.uint8:
        return obs.astype(jnp.float32) / 255.0
    return obs.astype(jnp.float32)


class Learner(NamedTuple):
    """The pure functions of a DQN / Rainbow learner (module docstring) and what they close over."""

    network: QNetwork
    optimizer: optax.GradientTransformation
    support: jax.Array | None  # C51 atom values, None for scalar heads
    target_update_period: int  # updates between two copies online -> target
    init: Callable[[jax.Array, jax.ShapeDtypeStruct], TrainState]
    update: Callable[[TrainState, Batch, jax.Array, jax.Array], tuple[TrainState, dict[str, Any]]]
    act: Callable[..., jax.Array]
    apply: Callable[..., ValueOutputs]  # (params, obs, rng, deterministic=False) -> outputs
    loss: Callable[..., tuple[jax.Array, tuple[losses.LossTerms, ValueOutputs]]]


def make_learner(
    config: ml_collections.ConfigDict,
    num_actions: int,
    observation_shape: Sequence[int] | None = None,
) -> Learner:
    """Builds the learner of an agent config (`agents.configs`) for ``num_actions`` actions.

    Reads ``config.network``, ``config.learner``, ``config.optimizer`` and, for the target period in
    updates, ``config.updates_per_frame``. NaP without a norm fails here with a one-line ValueError.
    With NaP and ``observation_shape`` (one observation's), the norms whose (γ, β) can be
    projected without changing the function are found from the network
    (`plasticity.nap.scale_invariant_norms`); without the shape no (γ, β) is projected.
    """
    check_nap_config(config.network.norm, config.optimizer.nap.enabled)
    if num_actions < 1:
        raise ValueError(f"num_actions must be >= 1, got {num_actions}")
    network = build_network(config.network, num_actions)
    initialization = check_initialization(config.network.initialization)
    invariant_norms = ()
    if config.optimizer.nap.enabled and observation_shape is not None:
        example = jax.ShapeDtypeStruct((1, *observation_shape), jnp.float32)
        kwargs = {"deterministic": True, "rngs": {"noise": jax.random.key(0)}}
        invariant_norms = scale_invariant_norms(network, example, apply_kwargs=kwargs)
    optimizer = make_optimizer(config.optimizer, nap_invariant_norms=invariant_norms)
    optimizer_config = ml_collections.ConfigDict(config.optimizer)
    num_atoms = config.network.num_atoms
    support = (
        jnp.linspace(config.network.v_min, config.network.v_max, num_atoms)
        if num_atoms > 1
        else None
    )
    period = target_update_period_updates(config)
    double_q = bool(config.learner.double_q)
    huber_delta = float(config.learner.huber_delta)
    priority_max = float(config.learner.priority_max)
    priority_epsilon = float(config.learner.priority_epsilon)
    grad_norm = bool(config.learner.grad_norm)

    injection = config.get("intervention", {}).get("name") == "plasticity_injection"

    def apply(
        params: Any,
        obs: jax.Array,
        rng: jax.Array,
        deterministic: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> ValueOutputs:
        inputs = preprocess_observations(obs)
        if injection and extra is not None:  # h_θ + h_θ' − h_θ'₀ once a head was injected
            return injected_apply(
                network, params, extra, inputs, deterministic=deterministic, rngs={"noise": rng}
            )
        return network.apply(
            {"params": params}, inputs, deterministic=deterministic, rngs={"noise": rng}
        )

    def init(rng: jax.Array, obs_spec: jax.ShapeDtypeStruct) -> TrainState:
        params_key, noise_key, state_key = jax.random.split(rng, 3)
        dummy = jnp.zeros((1,) + tuple(obs_spec.shape), obs_spec.dtype)
        variables = network.init(
            {"params": params_key, "noise": noise_key}, preprocess_observations(dummy)
        )
        # Strong-typed leaves (noisy layers' sigma initializers give weak-typed arrays, which would
        # make the first update's output types differ from its inputs and compile it twice).
        params = jax.tree.map(lambda x: jnp.asarray(x, dtype=x.dtype), variables["params"])
        params = initialize(initialization, params, jax.random.fold_in(params_key, 1))
        # A real copy: online and target buffers must be distinct for donation.
        target_params = jax.tree.map(lambda x: jnp.array(x, dtype=x.dtype, copy=True), params)
        return create_train_state(params, optimizer, state_key, {"target_params": target_params})

    def loss(
        params: Any,
        target_params: Any,
        batch: Batch,
        weights: jax.Array,
        rng: jax.Array,
        extra: dict[str, Any] | None = None,
    ) -> tuple[jax.Array, tuple[losses.LossTerms, ValueOutputs]]:
        online_key, target_key, selector_key = jax.random.split(rng, 3)
        out_tm1 = apply(params, batch["obs_tm1"], online_key, extra=extra)
        out_t_target = apply(target_params, batch["obs_t"], target_key, extra=extra)
        q_t_selector = None
        if double_q:
            q_t_selector = apply(
                jax.lax.stop_gradient(params), batch["obs_t"], selector_key, extra=extra
            ).q_values
        terms = losses.value_loss_terms(
            a_tm1=batch["a_tm1"],
            r_t=batch["r_t"],
            discount_t=batch["discount_t"],
            q_tm1=out_tm1.q_values,
            q_t_target=jax.lax.stop_gradient(out_t_target.q_values),
            logits_tm1=out_tm1.logits,
            logits_t_target=(
                None if out_t_target.logits is None else jax.lax.stop_gradient(out_t_target.logits)
            ),
            q_t_selector=q_t_selector,
            support=support,
            huber_delta=huber_delta,
            priority_max=priority_max,
            priority_epsilon=priority_epsilon,
        )
        weighted = jnp.mean(jax.lax.stop_gradient(weights) * terms.losses)
        return weighted, (terms, out_tm1)

    def update(
        state: TrainState, batch: Batch, weights: jax.Array, rng: jax.Array
    ) -> tuple[TrainState, dict[str, Any]]:
        target_params = state.extra["target_params"]
        grad_fn = jax.value_and_grad(loss, has_aux=True)
        (loss_value, (terms, out_tm1)), grads = grad_fn(
            state.params, target_params, batch, weights, rng, state.extra
        )
        learning_rate = optimizer_learning_rate(optimizer_config, state.step)
        state = apply_gradients(state, grads, optimizer)
        synced = state.step % period == 0
        target_params = jax.tree.map(
            lambda online, target: jnp.where(synced, online, target), state.params, target_params
        )
        state = state.replace(extra={**state.extra, "target_params": target_params})
        q_tm1 = jax.lax.stop_gradient(out_tm1.q_values)
        q_taken = jnp.take_along_axis(q_tm1, batch["a_tm1"][:, None].astype(jnp.int32), axis=1)[
            :, 0
        ]
        aux = {
            "loss": loss_value,
            "q_mean": jnp.mean(q_tm1),
            "q_taken_mean": jnp.mean(q_taken),
            "q_max_mean": jnp.mean(jnp.max(q_tm1, axis=-1)),
            "td_abs_mean": jnp.mean(jnp.abs(terms.td_errors)),
            "learning_rate": jnp.asarray(learning_rate, jnp.float32),
            "target_synced": synced,
            "per_example": {
                "priorities": terms.priorities,
                "td_errors": terms.td_errors,
                "losses": jax.lax.stop_gradient(terms.losses),
                "q_taken": q_taken,
            },
        }
        if grad_norm:
            aux["grad_norm"] = optax.global_norm(grads)
        return state, aux

    def act(
        params: Any,
        obs: jax.Array,
        rng: jax.Array,
        epsilon: float | jax.Array,
        deterministic: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> jax.Array:
        noise_key, explore_key, random_key = jax.random.split(rng, 3)
        q_values = apply(params, obs, noise_key, deterministic, extra).q_values
        batch_size = q_values.shape[0]
        greedy = jnp.argmax(q_values, axis=-1).astype(jnp.int32)
        random_actions = jax.random.randint(random_key, (batch_size,), 0, num_actions, jnp.int32)
        explore = jax.random.uniform(explore_key, (batch_size,)) < epsilon
        return jnp.where(explore, random_actions, greedy)

    return Learner(
        network=network,
        optimizer=optimizer,
        support=support,
        target_update_period=period,
        init=init,
        update=update,
        act=act,
        apply=apply,
        loss=loss,
    )


def make_replay(
    config: ml_collections.ConfigDict, frame_shape: tuple[int, ...], num_envs: int, stack: int
) -> ReplayState:
    """An empty replay for the agent config: capacity rounded down to a multiple of ``num_envs``."""
    capacity = (config.replay.capacity // num_envs) * num_envs
    return replay_init(
        capacity,
        num_envs,
        frame_shape,
        stack_size=stack,
        max_n_step=config.learner.n_step,
        priority_exponent=config.replay.priority_exponent,
        keep_priorities=bool(config.replay.prioritized),
    )


def make_learn_step(
    learner: Learner, config: ml_collections.ConfigDict
) -> Callable[
    [TrainState, ReplayState, jax.Array, jax.Array], tuple[TrainState, ReplayState, dict]
]:
    """``learn_step(state, replay, rng, importance_exponent) -> (state, replay, aux)``, pure.

    Samples a batch (prioritized or uniform, as ``config.replay.prioritized`` says; with it off the
    priorities are neither used nor updated and the weights are 1), runs `Learner.update` and writes
    the new priorities back. ``aux`` is the update's, plus ``per_example['indices']`` and
    ``per_example['weights']``. Jit it with ``donate_argnums=(0, 1)`` so the replay is not copied.
    """
    prioritized = bool(config.replay.prioritized)
    batch_size = int(config.learner.batch_size)
    n_step = int(config.learner.n_step)
    discount = float(config.learner.discount)

    def learn_step(
        state: TrainState, replay: ReplayState, rng: jax.Array, importance_exponent: jax.Array
    ) -> tuple[TrainState, ReplayState, dict[str, Any]]:
        sample_key, update_key = jax.random.split(rng)
        batch, info = replay_sample(
            replay, sample_key, batch_size, n_step, discount, prioritized, importance_exponent
        )
        weights = info.weights if prioritized else jnp.ones_like(info.weights)
        state, aux = learner.update(state, batch, weights, update_key)
        if prioritized:
            replay = replay_update_priorities(
                replay, info.indices, aux["per_example"]["priorities"]
            )
        per_example = {**aux["per_example"], "indices": info.indices, "weights": weights}
        return state, replay, {**aux, "per_example": per_example}

    return learn_step
