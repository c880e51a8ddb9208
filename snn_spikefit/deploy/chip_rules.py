"""Check rules of two chips whose toolchains enforce more than the profile's numbers: Speck and Xylo.

A rule runs for the profiles that name it in ``chip_rules`` (so a copy of the Speck profile under
another name keeps them); ``bias_bits`` runs for any profile with that field.

``speck_memory`` (sinabs 3.1.3 ``backend/dynapcnn``: ``DynapcnnLayer.memory_summary`` and
``DynapcnnConfigBuilder.get_constraints``): each layer takes one of 9 cores; a core holds
``kernel = c * 2**(ceil(log2(kh*kw)) + ceil(log2(f)))`` weights, ``neuron = f * 2**(ceil(log2(H)) +
ceil(log2(W)))`` neurons and 1024 biases, with kernel memory 16,16,16,32,32,64,64,16,16 Ki and
neuron memory 64,64,64,32,32,16,16,16,16 Ki per core. A Linear layer counts as a 1x1 convolution
over its inputs (sinabs maps it to a conv whose kernel is its input's size: a lower bound when the
input was a flattened map).

``bias_bits`` (a profile's ``bias_bits``; Speck: 8): a bias must be an integer number of the layer's
weight LSB (its frozen codebook scale), at most ``2**(bias_bits-1) - 1`` (sinabs 3.1.3 ``discretize.py``
gives biases the weights' 8 bits); the Speck target refuses the same (``sf.round_biases`` is the fix;
``sf.compress`` and ``fit_to_chip`` apply it after freezing for such a profile).

``xylo_layers`` (rockpool 3.1 ``devices/xylo/syns61201/xylo_mapper.py``, xylosim 0.1.3, and
:mod:`snn_spikefit.targets.xylo_spec`): at most 1000 hidden and 8 readout neurons; every neuron
has a synaptic current with bit-shift decays (``alpha = 1 - 2**-k``, k in 1..15; ``beta = 1 -
2**-j``, j in 0..15) and subtracts its threshold. Neuron parameters are read as ``alpha``,
``beta`` and ``reset_mechanism`` attributes (snnTorch's names); neurons without them are skipped.
"""

from __future__ import annotations

import math

import torch

from ..quantize.bias import bias_lsb
from ..targets.sinabs_program import BIAS_SLACK  # the slack the Speck target allows (float32 k * scale)
from .rules import CheckContext, register_check_rule

__all__ = ["SPECK_KERNEL_MEMORY", "SPECK_NEURON_MEMORY", "XYLO_HIDDEN", "XYLO_OUTPUTS"]

SPECK_KERNEL_MEMORY = [16 * 1024] * 3 + [32 * 1024] * 2 + [64 * 1024] * 2 + [16 * 1024] * 2
SPECK_NEURON_MEMORY = [64 * 1024] * 3 + [32 * 1024] * 2 + [16 * 1024] * 4
SPECK_BIAS_MEMORY = 1024
XYLO_HIDDEN, XYLO_OUTPUTS, XYLO_DASH_MAX = 1000, 8, 15


def _log2up(n: int) -> int:
    return math.ceil(math.log2(n)) if n > 1 else 0


def _speck_need(f) -> tuple[int, int | None, int]:
    """(kernel memory, neuron memory or None when the map size is unknown, biases) of one layer."""
    w = f.weight
    out_c = int(w.shape[0])
    if f.is_conv:
        c, k = int(w.shape[1]), int(w[0, 0].numel())
    else:
        c, k = int(w.shape[1]), 1
    kernel = c * 2 ** (_log2up(k) + _log2up(out_c))
    bias = getattr(f.module, "bias", None)
    biases = 0 if bias is None else int(bias.numel())
    if not f.is_conv:
        return kernel, out_c, biases
    if f.neurons is None:
        return kernel, None, biases
    hw = f.neurons // out_c
    side = math.isqrt(hw)
    return kernel, (out_c * 2 ** (2 * _log2up(side)) if side * side == hw else None), biases


def _assign(needs: list[tuple[int, int]]) -> bool:
    """Can every layer take its own core (kernel and neuron memory fit)? Small bipartite matching."""
    owner: dict[int, int] = {}

    def place(i: int, seen: set) -> bool:
        for core in range(len(SPECK_KERNEL_MEMORY)):
            if core in seen or needs[i][0] > SPECK_KERNEL_MEMORY[core] or needs[i][1] > SPECK_NEURON_MEMORY[core]:
                continue
            seen.add(core)
            if core not in owner or place(owner[core], seen):
                owner[core] = i
                return True
        return False
    return all(place(i, set()) for i in range(len(needs)))


def speck_memory(ctx: CheckContext) -> None:
    if "speck_memory" not in ctx.profile.chip_rules:
        return
    needs, before = [], len(ctx.violations)
    for f in ctx.layers:
        kernel, neuron, biases = _speck_need(f)
        if kernel > max(SPECK_KERNEL_MEMORY):
            ctx.add("speck_memory", "kernel_memory", f.name, max(SPECK_KERNEL_MEMORY), kernel,
                    f"{f.name} needs {kernel} kernel memory words (channels x 2**ceil(log2 kernel) x "
                    f"2**ceil(log2 features)); the largest Speck core holds {max(SPECK_KERNEL_MEMORY)}: fewer "
                    f"channels (prune) or smaller kernels")
        if neuron is None:
            ctx.skip("speck_memory", f.name, "neuron memory needs sample= and a square output map")
        elif neuron > max(SPECK_NEURON_MEMORY):
            ctx.add("speck_memory", "neuron_memory", f.name, max(SPECK_NEURON_MEMORY), neuron,
                    f"{f.name} needs {neuron} neurons (rounded up to powers of two per side); the largest "
                    f"Speck core holds {max(SPECK_NEURON_MEMORY)}: fewer channels or a smaller map (pool)")
        if biases > SPECK_BIAS_MEMORY:
            ctx.add("speck_memory", "bias_memory", f.name, SPECK_BIAS_MEMORY, biases, "at most 1024 biases")
        needs.append((kernel, neuron or 0))
    if len(ctx.violations) == before and len(needs) <= len(SPECK_KERNEL_MEMORY) and not _assign(needs):
        ctx.add("speck_memory", "core_memory", "(model)", "one core per layer", "no assignment",
                "the layers fit Speck's cores one by one but not all at once (two need the large cores): "
                "shrink the largest layers")


def bias_bits(ctx: CheckContext) -> None:
    """A chip with ``bias_bits`` holds integer biases in the weight scale (Speck: sinabs discretize.py, 8 bits)."""
    limit = ctx.profile.bias_bits
    if limit is None:
        return
    for f in ctx.layers:
        bias = getattr(f.module, "bias", None)
        scale = getattr(f.quantizer, "scale", None)
        if not isinstance(bias, torch.Tensor) or not bool(bias.ne(0).any()):
            continue
        if not isinstance(scale, torch.Tensor) or getattr(f.quantizer, "codebook_int", None) is None:
            ctx.skip("bias_bits", f.name, "integer biases need the layer's frozen integer weights (sf.freeze)")
            continue
        k = bias.detach().double() / bias_lsb(bias, scale)
        grid = torch.round(k)
        off, top, most = float((k - grid).abs().max()), int(grid.abs().max()), 2 ** (limit - 1) - 1
        if off > BIAS_SLACK:
            ctx.add("bias_bits", "bias_bits", f.name, "integer weight LSBs", f"{off:.3g} LSB off the grid",
                    f"{ctx.profile.name} holds integer biases in the weight scale: sf.round_biases(model, "
                    f"bits={limit}) after sf.freeze (or bias=False)")
        elif top > most:
            ctx.add("bias_bits", "bias_bits", f.name, most, top,
                    f"{ctx.profile.name} biases are {limit}-bit integers of the weight LSB: lower the bias, use "
                    f"finer weights, or sf.round_biases(model, bits={limit}) to clip")


def _dash_of(value, lo: int) -> int | None:
    v = torch.as_tensor(value, dtype=torch.float64).reshape(-1).unique()
    if v.numel() != 1 or not 0 <= float(v) < 1:
        return None
    k = math.log2(1.0 / (1.0 - float(v)))
    return int(round(k)) if abs(k - round(k)) < 1e-6 and lo <= round(k) <= XYLO_DASH_MAX else None


def xylo_layers(ctx: CheckContext) -> None:
    if "xylo_layers" not in ctx.profile.chip_rules:
        return
    dense = [f for f in ctx.layers if f.recurrent_of is None]
    if dense:
        hidden, out = sum(int(f.weight.shape[0]) for f in dense[:-1]), int(dense[-1].weight.shape[0])
        if out > XYLO_OUTPUTS:
            ctx.add("xylo_layers", "outputs", dense[-1].name, XYLO_OUTPUTS, out,
                    f"Xylo Audio 2 has {XYLO_OUTPUTS} readout neurons: the last layer may have at most {XYLO_OUTPUTS}")
        for f in dense:
            if getattr(f.module, "bias", None) is not None and bool(f.module.bias.ne(0).any()):
                ctx.add("xylo_layers", "bias", f.name, "no bias", "bias",
                        "Xylo adds a bias to the membrane, a Synaptic neuron's bias enters its current: "
                        "use bias=False")
        if hidden > XYLO_HIDDEN:
            ctx.add("xylo_layers", "hidden", "(model)", XYLO_HIDDEN, hidden,
                    f"Xylo Audio 2 has {XYLO_HIDDEN} hidden neurons: prune channels")
    for name, module in ctx.adapter.neurons(ctx.model):
        if not all(hasattr(module, a) for a in ("alpha", "beta")):
            continue  # no synaptic current: the neuron_model rule reports it
        for attr, lo in (("alpha", 1), ("beta", 0)):
            if _dash_of(getattr(module, attr), lo) is None:
                ctx.add("xylo_layers", "bit_shift_decay", name, f"1 - 2**-k, k in {lo}..{XYLO_DASH_MAX}",
                        round(float(torch.as_tensor(getattr(module, attr)).reshape(-1)[0]), 6),
                        f"Xylo decays by bit shifts: set {attr} = 1 - 2**-k (0.5, 0.75, 0.875, ...), one per layer")
        reset = getattr(module, "reset_mechanism", "subtract")
        if reset != "subtract":
            ctx.add("xylo_layers", "reset", name, "subtract", reset,
                    "Xylo neurons subtract the threshold: reset_mechanism='subtract'")


register_check_rule("speck_memory", speck_memory)
register_check_rule("bias_bits", bias_bits)
register_check_rule("xylo_layers", xylo_layers)
