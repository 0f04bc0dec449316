"""One pre-LayerNorm transformer block in Flax NNX, as a gradjax model plug-in
(`model = "transformer_nnx:transformer_block"`).

Each example is a flat vector of `in_dim = seq_len * d_model` numbers, seen as `seq_len` tokens
of `d_model` features (no embedding, no positions). The block:

    h = x + proj(attention(norm1(x)))        `heads`-head softmax self-attention, no mask
    h = h + down(gelu(up(norm2(h))))          MLP with 4 * d_model hidden units
    logits = head(mean over tokens of h)      `out_dim` logits

Flax's default inits throughout (LeCun normal kernels, zero biases, unit LayerNorm scales).

Taps: `attn_logits`, the scaled query-key products before the softmax, `[batch, heads, seq_len,
seq_len]`, and `mlp_hidden`, the MLP's pre-activations, `[batch, seq_len, 4 * d_model]`.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from gradjax.nn.adapters.flax_nnx import from_nnx


class Block(nnx.Module):
    """A pre-LayerNorm transformer block, mean-pooled into a linear head."""

    def __init__(self, seq_len: int, d_model: int, heads: int, out_dim: int, rngs: nnx.Rngs):
        self.seq_len, self.d_model, self.heads = seq_len, d_model, heads
        self.norm1 = nnx.LayerNorm(d_model, rngs=rngs)
        self.qkv = nnx.Linear(d_model, 3 * d_model, rngs=rngs)
        self.proj = nnx.Linear(d_model, d_model, rngs=rngs)
        self.norm2 = nnx.LayerNorm(d_model, rngs=rngs)
        self.up = nnx.Linear(d_model, 4 * d_model, rngs=rngs)
        self.down = nnx.Linear(4 * d_model, d_model, rngs=rngs)
        self.head = nnx.Linear(d_model, out_dim, rngs=rngs)

    def attention(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Self-attention of `x` `[batch, seq_len, d_model]`, and its logits."""
        batch = x.shape[0]
        q, k, v = jnp.split(self.qkv(x), 3, axis=-1)
        q, k, v = (t.reshape(batch, self.seq_len, self.heads, -1) for t in (q, k, v))
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / q.shape[-1] ** 0.5
        mixed = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), v)
        return self.proj(mixed.reshape(batch, self.seq_len, self.d_model)), logits

    def __call__(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Logits `[batch, out_dim]` and the taps of a batch `x` `[batch, seq_len * d_model]`."""
        h = x.reshape(x.shape[0], self.seq_len, self.d_model)
        attended, logits = self.attention(self.norm1(h))
        h = h + attended
        hidden = self.up(self.norm2(h))
        h = h + self.down(jax.nn.gelu(hidden))
        return self.head(h.mean(axis=1)), {"attn_logits": logits, "mlp_hidden": hidden}


def transformer_block(
    in_dim: int = 32, out_dim: int = 4, d_model: int = 8, heads: int = 2
) -> tuple[Callable, Callable]:
    """The plug-in factory of `Block`.

    Args:
        in_dim: numbers per example, `seq_len * d_model`.
        out_dim: logits per example.
        d_model: features per token.
        heads: attention heads; must divide `d_model`.

    Returns:
        `(init, apply)` from `gradjax.nn.adapters.flax_nnx.from_nnx`.
    """
    if in_dim % d_model:
        raise ValueError(f"transformer_block: in_dim={in_dim} is not a multiple of "
                         f"d_model={d_model}")
    if d_model % heads:
        raise ValueError(f"transformer_block: heads={heads} does not divide d_model={d_model}")
    seq_len = in_dim // d_model
    return from_nnx(lambda rngs: Block(seq_len, d_model, heads, out_dim, rngs))
