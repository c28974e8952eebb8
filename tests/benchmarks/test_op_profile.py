"""`benchmarks.op_profile`: self times of nested trace events, HLO sources, and a real trace."""

from __future__ import annotations

import jax
import jax.numpy as jnp
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


def test_operation_times_keep_program_instructions_and_sum_calls():
    events = [
        _event("ThunkExecutor::Execute", 0, 100),
        _event("dot.1", 10, 30),
        _event("dot.1", 50, 10),
        _event("fusion.2", 70, 5),
    ]
    rows = op_profile.operation_times(events, {"dot.1": "layer/dot_general", "fusion.2": ""})
    assert [(r.name, r.milliseconds, r.calls, r.source) for r in rows] == [
        ("dot.1", 0.04, 2, "layer/dot_general"),
        ("fusion.2", 0.005, 1, ""),
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
    rows, traced = op_profile.top_operations(
        lambda: jax.block_until_ready(compiled(a, a)), compiled.as_text(), 10
    )
    assert traced == pytest.approx(sum(row.milliseconds for row in rows))  # all rows fit in 10
    if not rows:
        pytest.fail("the trace held no event named after the program's instructions")
    assert all(row.calls >= 1 and row.milliseconds >= 0 for row in rows), rows
    sources = " ".join(row.source for row in rows)
    assert "dot_general" in sources and "sort" in sources, rows
    assert len(op_profile.format_rows(rows, 1.0)) == len(rows)
