"""XLA's LLVM optimization switched off for the suite's programs, in process and in the
launchers it starts.

A test's run is a few dozen steps, so compiling is most of its cost, and a program compiled at
LLVM's level 0 compiles up to a third faster (the README's main job at smoke scale: 34 s → 24 s
on 2 cores). XLA's own HLO passes (fusion, layout, the order of reductions) still run, so the
programs compute the same operations in the same order; what level 0 leaves out is LLVM's
machine-level work (vectorization, fused multiply-adds, inlining), which can move a result by a
rounding and never changes what a test compares within its tolerance. Runs compared bit for bit
are compiled with the same flags.
"""

from __future__ import annotations

FLAG = "--xla_backend_optimization_level=0"


def with_fast_compile(xla_flags: str = "") -> str:
    """``xla_flags`` with LLVM's optimization off (unchanged when they already say so)."""
    if FLAG in xla_flags:
        return xla_flags
    return f"{xla_flags} {FLAG}".strip()
