"""Independent numpy references: hand-written backprop, written without any gradjax code.

`seed_example_grads` is the seed's own derivation (why-gradients-same-value.md), with the one
shape fix it needs (see `seed_literal_w1_grad`). `mlp_backprop` is a general bias-ful MLP with
MSE loss, used to check every statistic gradjax computes.
"""

from __future__ import annotations

import numpy as np


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def sigmoid_derivative(x):
    return sigmoid(x) * (1 - sigmoid(x))


def relu_derivative(x):
    return np.where(x > 0, 1.0, 0.0)


def seed_example_grads(w1, b1, w2, b2, x, y_true, hidden: str, output: str) -> dict:
    """The seed's backprop for a 2-3-1 net and one example, extended to the biases.

    Shapes as in the seed: w1 [2, 3], b1 [3], w2 [3, 1], b2 [1], x [2], y_true [1].
    """
    z1 = np.dot(x, w1) + b1
    a1 = sigmoid(z1) if hidden == "sigmoid" else np.maximum(0, z1)
    z2 = np.dot(a1, w2) + b2
    y_hat = sigmoid(z2) if output == "sigmoid" else z2
    loss = 0.5 * (y_hat - y_true) ** 2
    d_loss_dyhat = y_hat - y_true
    d_yhat_dz2 = sigmoid_derivative(z2) if output == "sigmoid" else 1.0
    d_z2 = d_loss_dyhat * d_yhat_dz2  # [1]
    d_a1_dz1 = sigmoid_derivative(z1) if hidden == "sigmoid" else relu_derivative(z1)
    d_loss_da1 = d_z2 * w2[:, 0]  # the seed writes `* w2`, a [3, 1] column; see below
    d_z1 = d_loss_da1 * d_a1_dz1
    return {
        "loss": float(loss[0]),
        "W1": np.outer(x, d_z1),
        "b1": d_z1,
        "W2": (d_z2 * a1)[:, None],
        "b2": d_z2,
    }


def seed_literal_w1_grad(w1, b1, w2, b2, x, y_true) -> np.ndarray:
    """Example 1's `d_loss_dw1` exactly as the seed computes it.

    `d_loss_da1 = ... * w2` keeps w2's [3, 1] shape, so `d_loss_da1 * d_a1_dz1` broadcasts to
    [3, 3] and `np.outer` flattens it: the seed prints a [2, 9] matrix whose entry (i, 3j + k)
    is x_i * d_z2 * w2_j * sigmoid'(z1_k). Only the j == k entries are gradients.
    """
    z1 = np.dot(x, w1) + b1
    a1 = sigmoid(z1)
    z2 = np.dot(a1, w2) + b2
    y_hat = sigmoid(z2)
    d_loss_dyhat = y_hat - y_true
    d_yhat_dz2 = sigmoid_derivative(z2)
    d_a1_dz1 = sigmoid_derivative(z1)
    d_loss_da1 = d_loss_dyhat * d_yhat_dz2 * w2
    return np.outer(x, d_loss_da1 * d_a1_dz1)


ACTS = {
    "sigmoid": (sigmoid, sigmoid_derivative),
    "tanh": (np.tanh, lambda z: 1 - np.tanh(z) ** 2),
    "relu": (lambda z: np.maximum(z, 0), relu_derivative),
    "linear": (lambda z: z, np.ones_like),
}


def mlp_backprop(params, x, y, activation: str) -> dict:
    """Loss 0.5 * mean_batch sum (yhat - y)^2 with a linear output; returns grads, deltas
    (dL/dz per layer, [batch, units]), hidden pre-activations and derivatives."""
    phi, dphi = ACTS[activation]
    hs, zs = [x], []
    for l, p in enumerate(params):
        z = hs[-1] @ p["W"] + p["b"]
        zs.append(z)
        if l < len(params) - 1:
            hs.append(phi(z))
    batch = x.shape[0]
    delta = (zs[-1] - y) / batch
    grads, deltas = [None] * len(params), [None] * len(params)
    for l in range(len(params) - 1, -1, -1):
        deltas[l] = delta
        grads[l] = {"W": hs[l].T @ delta, "b": delta.sum(axis=0)}
        if l > 0:
            delta = (delta @ params[l]["W"].T) * dphi(zs[l - 1])
    loss = 0.5 * np.mean(np.sum((zs[-1] - y) ** 2, axis=1))
    return {"loss": loss, "grads": grads, "deltas": deltas, "z": zs[:-1],
            "dphi": [dphi(z) for z in zs[:-1]]}


def mean_squared_cosine(g: np.ndarray) -> float:
    """Mean squared cosine over ordered pairs of distinct nonzero columns, by an explicit
    double loop in float64 (each column scaled to unit norm first, so tiny columns are
    exact)."""
    cols = [g[:, j].astype(np.float64) for j in range(g.shape[1]) if np.any(g[:, j] != 0)]
    cols = [c / np.abs(c).max() for c in cols]
    sims = [
        (a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) ** 2
        for i, a in enumerate(cols)
        for j, b in enumerate(cols)
        if i != j
    ]
    return float(np.mean(sims)) if sims else float("nan")


def lsuv_multipliers(params, x, activation: str, layers: int, tol: float = 0.1,
                     t_max: int = 10) -> np.ndarray:
    """LSUV (Mishkin & Matas 2015, Algorithm 1) on an MLP, transcribed: for each of the first
    `layers` layers in order, while |Var(z_l) - 1| >= tol and fewer than t_max passes, a forward
    pass, then W_l /= sqrt(Var(z_l)), Var over the batch's examples x units of the layer's
    output z_l = h W_l + b_l. Returns the factor each layer's W was multiplied by (1 for the
    layers after `layers`). The paper's orthonormal pre-init is left out: the init is the
    given one."""
    phi = ACTS[activation][0]
    weights = [np.array(p["W"], np.float64) for p in params]
    factors = np.ones(len(params))

    def output(l):
        h = x
        for k in range(l):
            h = phi(h @ weights[k] + params[k]["b"])
        return h @ weights[l] + params[l]["b"]

    for l in range(layers):
        for _ in range(t_max):
            var = np.var(output(l))
            if abs(var - 1.0) < tol:
                break
            weights[l] = weights[l] / np.sqrt(var)
            factors[l] /= np.sqrt(var)
    return factors
