"""Plasticity diagnostics and interventions of a DQN / Rainbow learner, on batches of its replay.

Both RL loops use these pure functions, so a diagnostic or an intervention means the same thing on
MinAtar (inside the compiled ``lax.scan``) and on Atari (jitted between emulator steps):

* `make_diagnose(config, learner)` -> ``diagnose(train_state, replay, previous_params, key)``: the
  metrics of ``config.diagnostics.names`` and of `ALWAYS_LOGGED` (per-layer weight norm, effective
  learning rate and update size: `plasticity.diagnostics`) on a uniform replay batch of
  ``diagnostics.batch_size`` (the loss-based ones use the agent's own TD loss against its target
  network), every ``diagnostics.every_frames`` frames once learning has started.
* `make_intervene(config, learner)` -> ``intervene(train_state, replay, key)``: the intervention
  ``config.intervention.name`` (`plasticity.interventions`: ReDo, continual backprop,
  shrink-and-perturb, resets, plasticity injection) on a uniform replay batch of
  ``intervention.batch_size`` observations; None for 'none'. The loops call it every
  ``intervention.every_frames`` frames once learning has started, and at every game switch with
  ``intervention.at_switch``. Its state lives in ``train_state.extra[name]`` (`with_intervention_state`)
  and is checkpointed with the learner. With ``intervention.sync_target`` (by default for
  resets and plasticity injection: `syncs_target`) the target network is then set to the online
  one, as Nikishin et al. reset both; otherwise it catches up at its next copy, as after any
  update (an injected head's old target would read the frozen copies of the new head, the
  values of no network, so injection always syncs).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections

from agents.learner import Learner, preprocess_observations
from agents.replay import ReplayState, replay_sample
from plasticity.diagnostics import default_init_fn
from plasticity.effective_lr import configured_exponent
from plasticity.networks import with_initialization
from plasticity.optim import optimizer_learning_rate
from plasticity.train_state import TrainState


# Logged on every RL run whatever ``diagnostics.names`` lists, as the continual trainer always
# logs them (`benchmarks.continual.builtin_diagnostics`): cheap functions of the parameters.
ALWAYS_LOGGED = ("weight_norm", "effective_lr", "update_ratio")


def logged_diagnostics(names: Any) -> tuple[str, ...]:
    """The diagnostics an RL run logs: ``names`` (``diagnostics.names``), then the ones of
    `ALWAYS_LOGGED` it lacks."""
    return tuple(dict.fromkeys((*names, *ALWAYS_LOGGED)))


def _noise_kwargs(key: jax.Array) -> dict[str, Any]:
    return {"rngs": {"noise": key}}


def diagnostics_options(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The `plasticity.diagnostics.DiagnosticsOptions` fields of ``config.diagnostics.options``
    (thresholds, tolerances, the penultimate layer, ...) with the effective learning rate's p
    resolved (`plasticity.effective_lr.configured_exponent`: the section's
    ``effective_lr_exponent``, else the option, else the optimizer's).

    A dueling head has two penultimate layers; unless the options name one, 'feature_svd' reads
    the value stream's last hidden layer, where Q's action-independent part (and so any large
    offset of the returns) lives, rather than the advantage stream, the last layer called.
    """
    settings = config.diagnostics
    options = settings.options.to_dict()
    hidden_sizes = tuple(config.network.hidden_sizes)
    if config.network.dueling and hidden_sizes:
        options.setdefault("penultimate_layer", f"head/value_hidden_{len(hidden_sizes) - 1}")
    options["effective_lr_exponent"] = configured_exponent(
        float(settings.effective_lr_exponent),
        options.get("effective_lr_exponent"),
        config.optimizer.name,
    )
    return options


def make_diagnose(config: ml_collections.ConfigDict, learner: Learner) -> Callable:
    """``diagnose(train_state, replay, previous_params, key) -> {name: float32 scalar}`` (module
    docstring); the loops call it every ``diagnostics.every_frames`` frames (0: never)."""
    settings = config.diagnostics
    from plasticity.diagnostics import make_diagnostics_fn  # noqa: PLC0415

    def loss_fn(params, inputs, targets):
        batch = {**targets["batch"], "obs_tm1": inputs}
        loss, _ = learner.loss(
            params,
            targets["target_params"],
            batch,
            targets["weights"],
            targets["rng"],
            targets["extra"],  # an injected head's frozen parts: the agent's own values
        )
        return loss

    metrics_fn = make_diagnostics_fn(
        learner.network,
        loss_fn,
        logged_diagnostics(settings.names),
        apply_kwargs=_noise_kwargs,
        **diagnostics_options(config),
    )
    optimizer_config = ml_collections.ConfigDict(config.optimizer)
    batch_size = int(settings.batch_size)
    n_step, discount = int(config.learner.n_step), float(config.learner.discount)

    def diagnose(
        train_state: TrainState,
        replay: ReplayState,
        previous: Any,
        key: jax.Array,
        previous_known: jax.Array | bool = True,
    ):
        """The diagnostics of ``train_state`` on a replay batch; update ratios against
        ``previous``, the parameters before the last update, or NaN (written as null) when
        ``previous_known`` is False: a loop that no longer holds them (before a chunk's first
        update, after a resume) would otherwise log 0."""
        sample_key, loss_key, metrics_key = jax.random.split(key, 3)
        batch, _ = replay_sample(replay, sample_key, batch_size, n_step, discount)
        targets = {
            "batch": {name: value for name, value in batch.items() if name != "obs_tm1"},
            "target_params": train_state.extra["target_params"],
            "extra": train_state.extra,
            "weights": jnp.ones((batch_size,), jnp.float32),
            "rng": loss_key,
        }
        # The last update's rate (as its 'train' row and the update ratio): at a block's end the
        # schedule's next rate may already be the next block's restarted warm-up.
        last_update = jnp.maximum(train_state.step - 1, 0)
        learning_rate = optimizer_learning_rate(optimizer_config, last_update)
        metrics = metrics_fn(
            train_state.params,
            previous,
            preprocess_observations(batch["obs_tm1"]),
            targets,
            metrics_key,
            learning_rate,
        )
        unknown = jnp.logical_not(previous_known)
        return {
            name: jnp.where(unknown & name.startswith("update_ratio"), jnp.nan, value)
            for name, value in ((n, jnp.asarray(v, jnp.float32)) for n, v in metrics.items())
        }

    return diagnose


def make_intervention(config: ml_collections.ConfigDict, learner: Learner):
    """The `plasticity.interventions.Intervention` of ``config.intervention`` (None for 'none')."""
    settings = config.intervention
    if settings.name == "none":
        return None
    from plasticity import interventions  # noqa: PLC0415

    return interventions.make_intervention(
        settings.name,
        learner.network,
        apply_kwargs=_noise_kwargs,
        init_fn=fresh_params_fn(config, learner),
        **settings.options.to_dict(),
    )


def fresh_params_fn(config: ml_collections.ConfigDict, learner: Learner) -> Callable:
    """``(rng, inputs) -> params``: a fresh network as the learner's ``init`` draws one (under
    ``network.initialization``), for the interventions that reset, recycle or perturb."""
    network_init = default_init_fn(learner.network, _noise_kwargs)
    return with_initialization(network_init, config.network.initialization)


def with_intervention_state(train_state: TrainState, intervention) -> TrainState:
    """``train_state`` with the intervention's own state at ``extra[name]`` (when it has one)."""
    if intervention is None:
        return train_state
    extra = {**train_state.extra, intervention.name: intervention.init(train_state.params)}
    return train_state.replace(extra=extra)


# Interventions after which the target network is set to the online one unless
# ``intervention.sync_target`` says otherwise.
SYNCING_INTERVENTIONS = ("reset_last_layers", "plasticity_injection")


def syncs_target(settings: ml_collections.ConfigDict) -> bool:
    """Whether the intervention of ``settings`` (``config.intervention``) copies the online
    network into the target after it: ``sync_target``, or when unset, for resets and injection."""
    chosen = settings.get("sync_target")
    return settings.name in SYNCING_INTERVENTIONS if chosen is None else bool(chosen)


def make_intervene(config: ml_collections.ConfigDict, learner: Learner) -> Callable | None:
    """``intervene(train_state, replay, key) -> train_state`` (module docstring), or None."""
    intervention = make_intervention(config, learner)
    if intervention is None:
        return None
    batch_size = int(config.intervention.batch_size)
    n_step, discount = int(config.learner.n_step), float(config.learner.discount)
    sync = syncs_target(config.intervention)

    def intervene(train_state: TrainState, replay: ReplayState, key: jax.Array) -> TrainState:
        sample_key, apply_key = jax.random.split(key)
        batch, _ = replay_sample(replay, sample_key, batch_size, n_step, discount)
        probe = preprocess_observations(batch["obs_tm1"])
        train_state = intervention.apply(train_state, probe, apply_key)
        if sync:
            extra = {**train_state.extra, "target_params": train_state.params}
            train_state = train_state.replace(extra=extra)
        return train_state

    return intervene
