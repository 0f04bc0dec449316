"""Strict JAX hygiene for every test: rank promotion raises, warnings are errors (pyproject),
and the CPU shows two devices so sharded code paths run in CI."""

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_num_cpu_devices", 2)

import gradjax  # noqa: E402,F401  (sets the XLA flags before the backend starts)


@pytest.fixture
def x64():
    """Run a test with float64 enabled, restoring the previous setting afterwards."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)
