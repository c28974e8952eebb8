"""Plasticity testbed core: networks, NaP, optimizers, diagnostics, interventions (RL-agnostic)."""
