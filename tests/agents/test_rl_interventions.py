"""Interventions in both RL loops, from config: every N frames and at every game switch.

MinAtar applies them inside the compiled ``lax.scan`` (a flag of the learning plan per
iteration), Atari between emulator steps; both write an 'intervention' row each time.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from agents import atari_loop, configs, minatar_loop, probes, sequence
from agents.sequence import SwitchPolicy
from plasticity import workdir as workdir_lib
from tests.agents.test_atari_sequence import tiny as tiny_atari
from tests.agents.test_minatar_loop import tiny as tiny_minatar


@pytest.fixture(scope="module", autouse=True)
def fast_compiling_random_numbers():
    with jax.threefry_partitionable(False):
        yield


def rows_of(path, event):
    return [row for row in workdir_lib.read_metrics(path) if row["event"] == event]


def test_minatar_shrinks_every_256_frames_and_at_every_switch_inside_the_compiled_loop(tmp_path):
    """Shrink-and-perturb with λ = 0.5 and no noise halves every parameter: the weight norm
    measured every 256 frames (just before each shrink) keeps falling although the network
    trains in between."""
    config = tiny_minatar(num_seeds=1)
    config.intervention.update(
        name="shrink_perturb",
        every_frames=256,
        at_switch=True,
        options=ml_collections.ConfigDict({"shrink": 0.5, "perturb": 0.0}),
    )
    result = minatar_loop.train(config, str(tmp_path), show_progress=False)
    assert result.completed
    rows = rows_of(tmp_path, "intervention")
    # Every 256 frames and at each switch; the one due at a block's end (512, 1024, ...) runs
    # after the block's evaluation, at the next block's start (the last block's never runs).
    assert [r["frames"] for r in rows] == [256, 512, 512, 768, 1024, 1024, 1280, 1536, 1536, 1792]
    assert {r["name"] for r in rows} == {"shrink_perturb"}
    # The two at a switch say why each ran: the switch's, then the period's deferred one.
    causes = [r["cause"] for r in rows]
    assert causes == ["periodic", "at_switch", "periodic"] * 3 + ["periodic"]
    norms = [r["weight_norm/torso/conv_0"] for r in rows_of(tmp_path, "diagnostics")]
    assert len(norms) == 8 and all(b < a for a, b in zip(norms, norms[1:]))
    assert all(np.isfinite(r["loss"]) for r in rows_of(tmp_path, "train") if "loss" in r)


def test_atari_injects_a_new_head_at_the_switch_without_changing_the_function(
    tmp_path, monkeypatch
):
    """Plasticity injection at the first switch: the Q-values on the replay's observations are
    the same just before and just after it; the run then trains the new head. The replay is
    flushed at every switch, after the intervention has read the game that ended."""
    config = tiny_atari(switch=False)
    config.switch.flush_replay = True
    config.intervention.update(
        name="plasticity_injection",
        at_switch=True,
        options=ml_collections.ConfigDict({"num_layers": 1}),
    )
    seen, targets = [], []
    intervene = atari_loop.AtariLoop._intervene

    def recording(self, state, segment, seed):
        learner = self.compiled(segment).learner
        observations = (
            jnp.zeros((4, 84, 84, 4), jnp.uint8)
            + jnp.arange(4, dtype=jnp.uint8)[:, None, None, None] * 60
        )
        q = lambda s: (
            learner.apply(  # noqa: E731
                s.train_state.params, observations, jax.random.key(0), True, s.train_state.extra
            ).q_values
        )
        before = np.asarray(q(state))
        replay_items = int(state.replay.size)
        state = intervene(self, state, segment, seed)
        injected = bool(state.train_state.extra["plasticity_injection"]["injected"])
        seen.append((before, np.asarray(q(state)), injected, replay_items))  # host copies
        target = state.replace(
            train_state=state.train_state.replace(params=state.train_state.extra["target_params"])
        )
        targets.append(np.asarray(q(target)))  # the target read through the injected head
        return state

    monkeypatch.setattr(atari_loop.AtariLoop, "_intervene", recording)
    result = atari_loop.train(config, str(tmp_path), show_progress=False)
    assert result.completed
    assert len(seen) == 3  # the three switches of pong, breakout, pong, breakout
    assert all(items > 0 for *_, items in seen), seen  # never an emptied replay
    before, after, injected, _ = seen[0]
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6)
    assert injected
    # The target is set to the injected online network: the same values (its old parameters
    # read through the injected head would give 2 h_θ − h_θ'₀, no network's values).
    np.testing.assert_array_equal(targets[0], after)
    assert [r["frames"] for r in rows_of(tmp_path, "intervention")] == [256, 512, 768]
    final = result.outputs["state"].train_state
    own = final.extra["plasticity_injection"]
    frozen, fresh = own["frozen"], own["initial"]
    assert not np.allclose(
        final.params["head"]["output"]["kernel"], fresh["head"]["output"]["kernel"]
    )
    assert np.abs(frozen["head"]["output"]["kernel"]).sum() > 0


def test_minatar_recycles_units_at_a_switch_on_the_game_that_ended_even_with_a_flush():
    """ReDo at the switch scores units on the replay of the game that ended: flushing the replay
    at that switch changes nothing (on an emptied replay every unit would score 0 and be
    recycled)."""
    config = tiny_minatar(num_seeds=1)
    config.diagnostics.every_frames = 0
    config.intervention.update(
        name="redo", at_switch=True, options=ml_collections.ConfigDict({"tau": 0.025})
    )
    segment = sequence.plan_segments(config, minatar_loop.make_blocks(config))[0]
    agent = minatar_loop.make_agent(segment.config, tuple(config.games))
    state = agent.start_block(agent.init(np.zeros(1, np.int32)), np.int32(0), SwitchPolicy(), 0)
    window = segment.plan.window(0, 0, segment.plan.iterations[0])
    plan = {
        **segment.schedule_values(window),
        "updates": window["updates"],
        **minatar_loop.per_iteration_flags(segment, 0, window),
    }
    state, _ = agent.run_chunk(state, np.int32(0), plan)
    trained = jax.tree.map(np.asarray, state.train_state.params)
    after = {}
    for flush in (False, True):
        copy = jax.tree.map(jnp.copy, state)  # start_block donates its input
        started = agent.start_block(copy, np.int32(1), SwitchPolicy(flush_replay=flush), 1)
        after[flush] = jax.tree.map(np.asarray, started.train_state.params)
        if flush:
            assert int(started.replay.size.max()) == 0
    jax.tree.map(np.testing.assert_array_equal, after[True], after[False])
    changed = sum(
        int((a != b).sum()) for a, b in zip(jax.tree.leaves(trained), jax.tree.leaves(after[True]))
    )
    assert 0 < changed < 0.5 * sum(a.size for a in jax.tree.leaves(trained))


def test_atari_evaluates_a_block_before_the_intervention_due_at_its_end(tmp_path, monkeypatch):
    """A periodic intervention falling on a block's last iteration runs after the block's
    evaluation (which scores the trained network) and before the next block's switch policy,
    with its row there; the last block's never runs. One due with a progress evaluation inside
    a block (every 128 frames) runs after it too, once an update has run."""
    config = tiny_atari(switch=False)
    config.intervention.update(name="redo", every_frames=config.frames_per_game // 2)
    config.evaluation.every_frames = config.frames_per_game // 2
    calls = []
    intervene, evaluate = atari_loop.AtariLoop._intervene, atari_loop.AtariLoop.evaluate

    def recording_intervene(self, state, segment, seed):
        calls.append("intervene")
        return intervene(self, state, segment, seed)

    def recording_evaluate(self, run, state, segment, block):
        calls.append(f"evaluate {block}")
        return evaluate(self, run, state, segment, block)

    progress = atari_loop.AtariLoop._progress_evaluation

    def recording_progress(self, run, state, segment, block, iteration):
        calls.append("progress")
        return progress(self, run, state, segment, block, iteration)

    monkeypatch.setattr(atari_loop.AtariLoop, "_intervene", recording_intervene)
    monkeypatch.setattr(atari_loop.AtariLoop, "evaluate", recording_evaluate)
    monkeypatch.setattr(atari_loop.AtariLoop, "_progress_evaluation", recording_progress)
    result = atari_loop.train(config, str(tmp_path), show_progress=False)
    assert result.completed
    block = ["progress", "intervene"]  # mid-block: the progress evaluation first
    assert calls == [
        "progress",  # none at frame 128 in the first block: no update has run yet (at 136)
        "evaluate 0",
        "intervene",  # deferred to the next block's start
        *block,
        "evaluate 1",
        "intervene",
        *block,
        "evaluate 2",
        "intervene",
        *block,
        "evaluate 3",
    ]
    half = config.frames_per_game // 2  # every 128 frames, the last block's end's never
    assert [r["frames"] for r in rows_of(tmp_path, "intervention")] == [
        half * k for k in range(2, 8)
    ]


def test_resets_and_injection_sync_the_target_by_default_and_the_others_do_not():
    config = tiny_minatar(num_seeds=1)
    settings = config.intervention
    for name, synced in [
        ("reset_last_layers", True),
        ("plasticity_injection", True),
        ("redo", False),
        ("shrink_perturb", False),
        ("noisy_updates", False),
    ]:
        settings.name = name
        assert probes.syncs_target(settings) is synced, name
        settings.sync_target = not synced
        assert probes.syncs_target(settings) is not synced, name
        settings.sync_target = None
    settings.update(name="plasticity_injection", sync_target=False, at_switch=True)
    with pytest.raises(ValueError, match="sync_target=False with plasticity_injection"):
        configs.validate_config(config, "minatar")


def test_cbp_adaptable_contribution_on_a_crelu_network_is_refused_before_a_run():
    """The authors' utility follows one running mean per unit; a CReLU unit has two features."""
    config = tiny_minatar(num_seeds=1)
    config.intervention.update(name="cbp", every_frames=64, options={"utility": "contribution"})
    config.network.activation = "crelu"
    configs.validate_config(config, "minatar")  # the paper's utility sums the two features
    config.intervention.options.utility = "adaptable_contribution"
    with pytest.raises(ValueError, match="one running mean activation per unit.*CReLU"):
        configs.validate_config(config, "minatar")
    config.network.activation = "relu"
    configs.validate_config(config, "minatar")


def test_minatar_noisy_updates_every_iteration_write_one_row_a_chunk_from_the_first_update(
    tmp_path,
):
    """Noisy updates after every iteration (the docs' recipe) would write a row per iteration:
    one row a chunk instead, counting the chunk's applications, the first after the first
    update (none while the replay fills and no update has run)."""
    config = tiny_minatar(num_seeds=1)
    config.diagnostics.every_frames = 0
    config.intervention.update(name="noisy_updates", every_frames=config.env.num_envs)
    segment = sequence.plan_segments(config, minatar_loop.make_blocks(config))[0]
    assert segment.summarizes_interventions
    result = minatar_loop.train(config, str(tmp_path), show_progress=False)
    assert result.completed
    rows = rows_of(tmp_path, "intervention")
    periodic = [r for r in rows if "applications" in r]
    deferred = [r for r in rows if "applications" not in r]  # at block starts (blocks 1-3)
    chunks = config.frames_per_game // config.checkpoint_every_frames
    assert len(periodic) == len(segment.blocks) * chunks and len(deferred) == 3
    first = segment.plan.window(0, 0, segment.plan.iterations[0])
    updated = np.flatnonzero(first["updates_after"] > 0)
    assert periodic[0]["first_frames"] == first["frames_after"][updated[0]]
    for block in range(len(segment.blocks)):  # every iteration after the first update but
        window = segment.plan.window(block, 0, segment.plan.iterations[block])  # the last
        expected = int(np.sum(window["updates_after"][:-1] > 0))
        assert sum(r["applications"] for r in periodic if r["block"] == block) == expected
    assert all(r["every_frames"] == config.env.num_envs for r in periodic)


def test_an_rl_schedule_without_an_intervention_is_refused_but_a_none_baseline_may_share_it():
    config = tiny_minatar(num_seeds=1)
    config.intervention.every_frames = 256
    with pytest.raises(ValueError, match="intervention.name is 'none'"):
        configs.expand_runs(config, "minatar", "w")
    config.variants = ml_collections.ConfigDict(
        {"baseline": {}, "redo": {"intervention": {"name": "redo"}}}
    )
    config.variant_order = ("baseline", "redo")
    runs = configs.expand_runs(config, "minatar", "w")
    assert [one.intervention.name for _, one in runs] == ["none", "redo"]


def test_a_work_dir_from_before_target_syncs_resumes_only_without_them(tmp_path):
    """A reset run's work dir written before ``intervention.sync_target`` existed never synced
    the target: relaunched as it is, it would switch syncing on halfway, so it is refused until
    the command line says sync_target=False; the recorded config says how the run syncs."""
    import json  # noqa: PLC0415

    config = tiny_minatar(num_seeds=1)
    config.intervention.update(name="reset_last_layers", every_frames=256)
    assert not minatar_loop.train(
        config, str(tmp_path), show_progress=False, stop_after_checkpoints=1
    ).completed
    path = tmp_path / "config.json"
    saved = json.loads(path.read_text())
    assert saved["intervention"]["sync_target"] is True  # resolved from None for resets
    del saved["intervention"]["sync_target"]  # as written before the field existed
    path.write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=r"different config \(fields: intervention.sync_target"):
        minatar_loop.train(config, str(tmp_path), show_progress=False)
    config.intervention.sync_target = False
    assert minatar_loop.train(config, str(tmp_path), show_progress=False).completed


def test_a_variants_work_dir_resumes_alone_or_beside_other_arms(tmp_path):
    """An RL variant's work dir holds that variant alone: relaunched alone, reordered or beside
    an arm added since, it resumes (the sweep's other definitions and order change nothing it
    trains), and so it does with its games spelled another way (the recorded schedule names
    them canonically), while a change to its own fields is still refused."""
    base = tiny_minatar(num_seeds=1)
    base.games = tuple(game.upper() for game in base.games)
    base.variants = ml_collections.ConfigDict(
        {"baseline": {}, "redo": {"intervention": {"name": "redo", "every_frames": 256}}}
    )
    base.variant_order = ("baseline", "redo")
    (path, first), _ = configs.expand_runs(base, "minatar", str(tmp_path))
    assert not minatar_loop.train(
        first, path, show_progress=False, stop_after_checkpoints=1
    ).completed
    later = ml_collections.ConfigDict(base.to_dict())
    later.variants.wider = {"network": {"hidden_sizes": (32,)}}
    later.variant_order = ("wider", "baseline")
    later.games = tuple(game.lower() for game in base.games)
    ((_, wider), (again_path, again)) = configs.expand_runs(later, "minatar", str(tmp_path))
    assert again_path == path
    with pytest.raises(ValueError, match=r"different config \(fields: network.hidden_sizes\)"):
        minatar_loop.train(wider, path, show_progress=False)
    other_game = ml_collections.ConfigDict(again.to_dict())
    other_game.games = ("asterix",) * len(base.games)
    with pytest.raises(ValueError, match=r"different config \(fields: schedule"):
        minatar_loop.train(other_game, path, show_progress=False)
    resumed = minatar_loop.train(again, path, show_progress=False)
    assert resumed.completed and resumed.resumed_from > 0
