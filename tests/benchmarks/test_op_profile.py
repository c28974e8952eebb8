"""`benchmarks.op_profile`: self times and wall shares of trace events, HLO sources, a trace."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import op_profile


def _event(name, start, duration, tid=1):
    return {"ph": "X", "name": name, "ts": start, "dur": duration, "pid": 7, "tid": tid}


def test_self_time_subtracts_only_directly_nested_events():
    events = [
        _event("outer", 0, 100),
        _event("child", 10, 30),
        _event("grandchild", 15, 10),
        _event("sibling", 50, 20),
        _event("other_thread", 0, 100, tid=2),  # overlaps in time, not nested: another thread
        {"ph": "i", "name": "instant", "ts": 5},  # not a complete event
    ]
    own = dict(op_profile.self_times(events))
    assert own == {
        "outer": 100 - 30 - 20,
        "child": 30 - 10,
        "grandchild": 10,
        "sibling": 20,
        "other_thread": 100,
    }


def _nested_events(rng, tid, start, end, depth):
    """Random properly nested complete events filling parts of [start, end) on one thread."""
    events, cursor = [], start
    while cursor < end - 2:
        first = int(rng.integers(cursor, end - 1))
        last = int(rng.integers(first + 1, min(end, first + 1 + (end - start) // 2) + 1))
        name = f"op.{rng.integers(4)}" if rng.random() < 0.8 else "ThunkExecutor::Execute"
        events.append(_event(name, first, last - first, tid))
        if depth and last - first > 4:  # children strictly inside: no two events share a span
            events += _nested_events(rng, tid, first + 1, last, depth - 1)
        cursor = last
    return events


def _innermost_per_microsecond(events, span):
    """Brute force: per thread, the name of the innermost event at each integer microsecond (the
    latest-starting event covering it, the shorter one on a tie), or None."""
    threads = {e["tid"] for e in events}
    table = {tid: [None] * span for tid in threads}
    for tid in threads:
        mine = [e for e in events if e["tid"] == tid]
        for t in range(span):
            covering = [e for e in mine if e["ts"] <= t < e["ts"] + e["dur"]]
            if covering:
                table[tid][t] = max(covering, key=lambda e: (e["ts"], -e["dur"]))["name"]
    return table


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wall_shares_split_each_instant_among_the_operations_running_then(seed):
    rng = np.random.default_rng(seed)
    span = 120
    events = []
    for tid in (1, 2, 3):
        events += _nested_events(rng, tid, 0, span, 3)
    names = {f"op.{i}" for i in range(4)}
    table = _innermost_per_microsecond(events, span)
    expected, busy = {}, 0
    for t in range(span):
        running = [row[t] for row in table.values() if row[t] in names]
        busy += bool(running)
        for name in running:
            expected[name] = expected.get(name, 0.0) + 1 / len(running)
    shares, traced_busy = op_profile.wall_shares(events, names)
    assert traced_busy == pytest.approx(busy)
    assert sorted(shares) == sorted(expected)
    for name, value in expected.items():
        assert shares[name] == pytest.approx(value), name
    # The innermost pieces of each event add up to its self time.
    pieces = {}
    for name, start, end in op_profile.innermost_segments(events):
        pieces[name] = pieces.get(name, 0.0) + end - start
    own = {}
    for name, value in op_profile.self_times(events):
        own[name] = own.get(name, 0.0) + value
    assert pieces == pytest.approx({n: v for n, v in own.items() if v > 0})


def test_two_overlapping_operations_each_get_half_the_overlap():
    events = [_event("dot.1", 0, 100, tid=1), _event("dot.2", 50, 100, tid=2)]
    shares, busy = op_profile.wall_shares(events, ["dot.1", "dot.2"])
    assert shares == {"dot.1": 75.0, "dot.2": 75.0} and busy == 150.0
    rows = op_profile.operation_times(events, {"dot.1": "", "dot.2": ""})
    assert [(r.milliseconds, r.wall_milliseconds) for r in rows] == [(0.1, 0.075)] * 2


def test_operation_times_keep_program_instructions_and_sum_calls():
    events = [
        _event("ThunkExecutor::Execute", 0, 100),
        _event("dot.1", 10, 30),
        _event("dot.1", 50, 10),
        _event("fusion.2", 70, 5),
    ]
    rows = op_profile.operation_times(events, {"dot.1": "layer/dot_general", "fusion.2": ""})
    assert [(r.name, r.milliseconds, r.calls, r.source, r.wall_milliseconds) for r in rows] == [
        ("dot.1", 0.04, 2, "layer/dot_general", 0.04),
        ("fusion.2", 0.005, 1, "", 0.005),
    ]


def test_instruction_sources_read_hlo_names_drop_wrappers_and_look_into_fusions():
    hlo = "\n".join(
        [
            "%fused_computation (param_0: f32[4]) -> f32[4] {",
            '  %dot.14 = f32[4,400,120]{2,1,0} dot(%a, %b), metadata={op_name="jit(over)/vmap()/'
            "while/body/closed_call/while/body/transpose(jvp(QNetwork))/torso/hidden_0/linear/"
            'transpose" stack_frame_id=963}',
            "  ROOT %copy.3 = f32[4]{0} copy(%x)",
            "}",
            "",
            "%fused_computation.7 (param_0.1: f32[8,8]) -> f32[8,8] {",
            '  ROOT %convolution.2 = f32[8,8]{1,0} convolution(%p), metadata={op_name="jit(f)/'
            'transpose(jvp(QNetwork))/torso/conv_0/linear/conv_general_dilated"}',
            "}",
            "",
            "ENTRY %main.9 (Arg_0.1: f32[8,8]) -> f32[8,8] {",
            "  %ynn_fusion.7 = f32[8,8]{1,0} fusion(%Arg_0.1), kind=kCustom, "
            "calls=%fused_computation.7, backend_config={}",
            "  ROOT %ynn_fusion.8 = f32[8,8]{1,0} fusion(%ynn_fusion.7), kind=kCustom, "
            "calls=%fused_computation.1",
            "}",
            "",
            "%fused_computation.1 (param_0.2: f32[8,8]) -> f32[8,8] {",
            "  ROOT %convolution-window-dilated.3 = f32[8,8]{1,0} convolution(%param_0.2)",
            "}",
        ]
    )
    assert op_profile.instruction_sources(hlo) == {
        "dot.14": "transpose(jvp(QNetwork))/torso/hidden_0/linear/transpose",
        "copy.3": "",
        "convolution.2": "transpose(jvp(QNetwork))/torso/conv_0/linear/conv_general_dilated",
        "ynn_fusion.7": "transpose(jvp(QNetwork))/torso/conv_0/linear/conv_general_dilated",
        "convolution-window-dilated.3": "",
        "ynn_fusion.8": "[convolution-window-dilated.3]",
    }


def test_a_real_trace_names_the_programs_matrix_product():
    @jax.jit
    def program(a, b):
        return jnp.sort(a @ b, axis=0)  # a sort: no fusion swallows the product

    a = jnp.ones((256, 256))
    compiled = program.lower(a, a).compile()
    jax.block_until_ready(compiled(a, a))
    profile = op_profile.top_operations(
        lambda: jax.block_until_ready(compiled(a, a)), compiled.as_text(), 10
    )
    rows = profile.rows
    assert profile.traced_milliseconds == pytest.approx(sum(row.milliseconds for row in rows))
    # Wall shares add up to the busy time, which concurrency can only make shorter.
    assert sum(row.wall_milliseconds for row in rows) == pytest.approx(profile.busy_milliseconds)
    assert profile.busy_milliseconds <= profile.traced_milliseconds * (1 + 1e-9)
    if not rows:
        pytest.fail("the trace held no event named after the program's instructions")
    assert all(row.calls >= 1 and row.milliseconds >= 0 for row in rows), rows
    sources = " ".join(row.source for row in rows)
    assert "dot_general" in sources and "sort" in sources, rows
    assert len(op_profile.format_rows(profile)) == len(rows)
