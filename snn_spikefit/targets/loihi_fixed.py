"""Loihi's fixed-point neuron in numpy: our own simulation of a compiled fixed-point Lava program.

Bit for bit what Lava's ``PyDenseModelBitAcc`` and ``PyLifResetModelBitAcc`` compute (measured in
tests/test_lava.py), one sample at a time, without the simulator's one-step lag per Dense::

    a    = (W @ s_in) << we            (we < 0: arithmetic right shift)
    u    = sign(p) (|p| >> 12) + (a << 6),  p = u (4096 - du - 1),  wrapped to 24 bits
    v    = sign(q) (|q| >> 12) + u + (bias_mant << bias_exp),  q = v (4096 - dv),
           clipped to +-(2**23 - 1)
    s    = v > vth << 6;  v[s] = 0     (subtract reset: v -= vth << 6 at the next step)

numpy only (no torch).
"""

from __future__ import annotations

import numpy as np

__all__ = ["simulate_fixed", "quantize_inputs"]

_M = 2 ** 23


def quantize_inputs(x: np.ndarray, bits: int) -> np.ndarray:
    """``round(x * 2**bits)`` as int64: the graded spikes a fixed-point program takes."""
    return np.rint(np.asarray(x, np.float64) * 2.0 ** bits).astype(np.int64)


def _decay(x: np.ndarray, keep: int) -> np.ndarray:
    p = x * keep
    return np.sign(p) * (np.abs(p) >> 12)


def simulate_fixed(program, x_int: np.ndarray) -> list[np.ndarray]:
    """Per layer, spikes ``[N, T, n_out]`` (uint8) of ``program`` on integer inputs ``[N, T, n_in]``."""
    n, t = x_int.shape[:2]
    s_in = np.asarray(x_int, np.int64).reshape(n, t, -1)
    out = []
    for layer in program.layers:
        f = layer.fixed
        w, we = np.asarray(f["weights"], np.int64), int(f["weight_exp"])
        bias = np.asarray(f["bias_mant"], np.int64) << np.asarray(f["bias_exp"], np.int64)
        vth = int(f["vth"]) << 6
        u = np.zeros((n, w.shape[0]), np.int64)
        v = np.zeros_like(u)
        pending = np.zeros(u.shape, bool)
        spikes = np.zeros((n, t, w.shape[0]), np.uint8)
        for step in range(t):
            acc = s_in[:, step] @ w.T
            a = acc << we if we > 0 else acc >> -we
            d = _decay(u, 4096 - (int(f["du"]) + 1)) + (a << 6)
            wrapped = np.where(d > _M, d - 2 * _M, d)
            u = np.where(wrapped <= -_M, d + 2 * _M, wrapped)
            v = np.clip(_decay(v, 4096 - int(f["dv"])) + u + bias, -_M + 1, _M - 1)
            if layer.reset == "subtract":
                v = v - vth * pending
            s = v > vth
            if layer.reset == "subtract":
                pending = s
            else:
                v = np.where(s, 0, v)
            spikes[:, step] = s
        out.append(spikes)
        s_in = spikes.astype(np.int64)
    return out
