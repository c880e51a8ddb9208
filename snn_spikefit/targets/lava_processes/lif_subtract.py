"""A Lava process with snnTorch's subtract reset: loaded by file path in the Lava environment only.

``LIFSubtractReset`` is Lava's ``LIFReset`` (u and v cleared every ``reset_interval`` steps) whose
spike subtracts the threshold from ``v`` at the next step instead of zeroing it::

    v[t] = decay(v[t-1]) + u[t] + bias - vth * s[t-1],   s[t] = v[t] > vth

Its models reuse Lava's own float and bit-accurate LIF dynamics (``subthr_dynamics``); only the
reset differs. This folder holds nothing else: Lava searches a process's folder for its models.
"""

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.ports import PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.lif.models import AbstractPyLifModelFixed, AbstractPyLifModelFloat
from lava.proc.lif.process import LIFReset


class LIFSubtractReset(LIFReset):
    """LIFReset with subtract reset (see the module docstring)."""


def _init(model, proc_params):
    model.reset_interval = proc_params["reset_interval"]
    model.reset_offset = proc_params["reset_offset"] % model.reset_interval
    model.pending = None


def _run_spk(model, fixed: bool):
    a_in = model.a_in.recv()
    if model.pending is None or (model.time_step % model.reset_interval) == model.reset_offset:
        model.u *= 0
        model.v *= 0
        model.pending = np.zeros(model.v.shape, dtype=bool)
    if fixed:
        model.scale_bias()
        model.effective_vth = np.left_shift(model.vth, model.vth_shift)
    model.subthr_dynamics(activation_in=a_in)
    thr = model.effective_vth if fixed else model.vth
    model.v[model.pending] -= thr
    s_out = model.v > thr
    model.pending = s_out.astype(bool)
    model.s_out.send(s_out)


@implements(proc=LIFSubtractReset, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyLifSubtractResetFloat(AbstractPyLifModelFloat):
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    vth: float = LavaPyType(float, float)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        _init(self, proc_params)

    def run_spk(self):
        _run_spk(self, False)


@implements(proc=LIFSubtractReset, protocol=LoihiProtocol)
@requires(CPU)
@tag("bit_accurate_loihi", "fixed_pt")
class PyLifSubtractResetBitAcc(AbstractPyLifModelFixed):
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    vth: int = LavaPyType(int, np.int32, precision=17)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        _init(self, proc_params)

    def run_spk(self):
        _run_spk(self, True)
