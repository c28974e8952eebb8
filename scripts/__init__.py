"""Thin absl launchers."""
