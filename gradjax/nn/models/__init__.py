"""Model families: the built-in ones (`mlp`, `resmlp`) and plug-ins ("package.module:factory").

A family is one module that declares its options (`OPTIONS`, `gradjax.spec.option.Option`) and
provides `factory(**options) -> (init, apply)`:

    init(key) -> params              any pytree of float arrays, at scale = bias_scale = 1
    apply(params, x) -> outputs      [batch, out_dim] logits; or (outputs, taps), taps a dict
                                     name -> [batch, ...] pre-activations

`resolve` turns a sweep's `model` value into a `Family` without importing JAX (a built-in
family imports JAX only inside its factory); a plug-in's options come from its factory's
signature (`gradjax.nn.models.plugin`). The contract is written out in docs/extending.md.
"""

from gradjax.nn.models.family import Family
from gradjax.nn.models.registry import resolve
from gradjax.spec.families import BUILT_IN

__all__ = ["BUILT_IN", "Family", "resolve"]
