"""Adapters that turn models written with a neural-net library into gradjax model plug-ins.

A plug-in is a factory `factory(**options) -> (init, apply)`: `init(key) -> params` takes a
typed PRNG key and returns a pytree of float arrays; `apply(params, x)` maps a batch
`[batch, in_dim]` to the logits `[batch, out_dim]`, or to `(logits, taps)` with `taps` a dict of
pre-activations `[batch, ...]`. Each submodule builds that pair from one library's modules:

- `gradjax.nn.adapters.equinox.from_equinox(make)`: `make(key) -> eqx.Module` (needs `equinox`).
- `gradjax.nn.adapters.flax_nnx.from_nnx(make)`: `make(rngs) -> nnx.Module` (needs `flax`).

Importing this package imports nothing else (no JAX, no Equinox, no Flax): import the submodule
you need, which imports its library.
"""

__all__: list[str] = []
