"""Networks as pure functions: activations, initializers, losses, the random streams of one
init (`keys`, `data`), the MLP (`network`), the model families and their plug-in adapters
(`models`, `adapters`), the layer order of any model (`layer_order`), the mean-field theory
beside the layers it describes (`theory`, on the Gaussian moments of `gaussian`, with the summary
columns of `theory_columns`) and the XLA flags set before the backend starts (`xla`). Importing
this package imports no JAX; its modules do, except `models`' registry and `xla`.
"""
