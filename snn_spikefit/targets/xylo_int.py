"""Our integer model of the Xylo core (xylosim's arithmetic, written from its equations), in numpy.

All states int16 (``sat`` clips to [-32768, 32767]); ``decay(v, d) = v >> d`` (arithmetic shift),
except that it is ``sign(v)`` where that shift gives 0 and ``v != 0``. Each step: (1) every input
channel in ascending order adds ``w << shift_in`` to the current ``min(c, 15)`` times, saturating
after every add; (2) the hidden spike counts of the previous step feed the recurrent and readout
synapses the same way; (3) ``I -= decay(I, dash_syn)``, ``dv = sat(I - decay(V, dash_mem))``,
``V = sat(V + dv)``, then ``while V >= thr and n < max: n += 1; V -= thr`` (max 31 hidden, 1 out).
Where no partial sum can saturate, one matrix product per step gives the same sums.
"""

from __future__ import annotations

import numpy as np

__all__ = ["simulate_xylo", "LO", "HI"]

LO, HI = -(2 ** 15), 2 ** 15 - 1


def _decay(v: np.ndarray, d: np.ndarray) -> np.ndarray:
    out = v >> d
    return np.where((out == 0) & (v != 0), np.sign(v), out)


def _accumulate(i_syn: np.ndarray, counts: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``i_syn [N, n] += counts [N, m] @ w [m, n]``, saturating after every single add, in order."""
    if not counts.any():
        return i_syn
    bound = np.abs(i_syn) + counts @ np.abs(w)
    if bound.max(initial=0) <= HI:
        return i_syn + counts @ w
    for j in range(w.shape[0]):  # some sum may saturate: add one event at a time
        for rep in range(int(counts[:, j].max(initial=0))):
            hit = (counts[:, j] > rep)[:, None]
            i_syn = np.where(hit, np.clip(i_syn + w[j], LO, HI), i_syn)
    return i_syn


def _neurons(i_syn, v, d_syn, d_mem, thr, most):
    i_syn = i_syn - _decay(i_syn, d_syn)
    dv = np.clip(i_syn - _decay(v, d_mem), LO, HI)
    v = np.clip(v + dv, LO, HI)
    n = np.where(v >= thr, np.minimum(v // thr, most), 0)
    return i_syn, v - n * thr, n


def simulate_xylo(a: dict, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hidden and readout spike counts ``[N, T, n]`` of the spec arrays ``a`` on input counts ``[N, T, n_in]``."""
    shift_in, shift_rec, shift_out = (int(s) for s in a["shifts"])
    w_in = a["w_in"].astype(np.int64) << shift_in
    w_rec = a["w_rec"].astype(np.int64) << shift_rec
    w_out = a["w_out"].astype(np.int64) << shift_out
    c = np.minimum(np.asarray(counts, np.int64), 15)
    n, t = c.shape[:2]
    nh, no = w_in.shape[1], w_out.shape[1]
    ih, vh, io, vo = (np.zeros((n, k), np.int64) for k in (nh, nh, no, no))
    prev = np.zeros((n, nh), np.int64)
    hid, out = np.zeros((n, t, nh), np.int64), np.zeros((n, t, no), np.int64)
    for step in range(t):
        ih = _accumulate(ih, c[:, step], w_in)
        ih = _accumulate(ih, prev, w_rec)
        io = _accumulate(io, prev, w_out)
        ih, vh, sh = _neurons(ih, vh, a["dash_syn"], a["dash_mem"], a["threshold"], 31)
        io, vo, so = _neurons(io, vo, a["dash_syn_out"], a["dash_mem_out"], a["threshold_out"], 1)
        hid[:, step], out[:, step], prev = sh, so, sh
    return hid, out
