"""The quantizer protocol: every quantizer, on weights that are not called ``weight``.

Two models: a plain-torch spiking net whose layers keep their synaptic weight in
``kernel`` (named through a test adapter's ``weight_names``, pruned through a
registered surgery, exported through a registered NIR layer), and a Norse net
with a ``LIFRecurrentCell`` (``input_weights``/``recurrent_weights``). For each
quantizer (CAT trainable and frozen, TTQ, clustered, QAT fake-quant, QP-SNN):
prune, fold, evaluate, check, export and freeze go through the protocol.
"""

import copy

import nir
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import snn_spikefit as sf
from snn_spikefit.adapter import Adapter, stack_steps
from snn_spikefit.baselines import cluster, qat, qpsnn, ttq
from snn_spikefit.deploy.metrics import model_size_bits
from snn_spikefit.nir.common import register_nir_layer
from snn_spikefit.pruning.surgery import Surgery, register_surgery, slice_weight
from snn_spikefit.quantize.codebook import FrozenCodebook
from snn_spikefit.quantize.fold import fold_batchnorm
from snn_spikefit.quantize.layers import candidates
from snn_spikefit.quantize.quantizer import IntegerForm, Quantizer

from conftest import needs_norse, needs_snntorch


# -- a plain-torch spiking model whose weights are called "kernel" ------------------------------------------

class KernelLinear(nn.Module):
    """``x @ kernel.T + bias``; the synaptic weight is the parameter ``kernel`` [out, in]."""

    def __init__(self, inputs: int, outputs: int) -> None:
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(outputs, inputs) / inputs ** 0.5)
        self.bias = nn.Parameter(torch.randn(outputs) * 0.1)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.kernel, self.bias)


class TinyIF(nn.Module):
    """Integrate-and-fire, reset to zero; sigmoid surrogate gradient; state in the module."""

    def __init__(self, threshold: float = 0.5) -> None:
        super().__init__()
        self.threshold = threshold
        self.v: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        v = x if self.v is None else self.v + x
        soft = torch.sigmoid(4 * (v - self.threshold))
        spikes = (v > self.threshold).to(v.dtype) + (soft - soft.detach())
        self.v = v * (1 - spikes.detach())
        return spikes


class KernelAdapter(Adapter):
    name = "test-kernel"

    def is_neuron(self, module):
        return isinstance(module, TinyIF)

    def weight_names(self, module):
        return ["kernel"] if isinstance(module, KernelLinear) else []

    def reset(self, model):
        for m in model.modules():
            if isinstance(m, TinyIF):
                m.v = None

    def run(self, model, x, num_steps):
        steps = [x] * num_steps if num_steps is not None else list(x)
        return stack_steps([model(xt) for xt in steps])

    def spikes(self, module, output):
        return output

    def neuron_to_nir(self, module, *, dt, shape):
        return nir.IF(r=np.full(shape, 1.0 / dt), v_threshold=np.full(shape, module.threshold),
                      v_reset=np.zeros(shape))

    def prune_neuron(self, module, keep, channel_dim):
        module.v = None  # no per-channel parameters; the state re-initialises

    def neuron_model(self, module):
        return "IF"


def _kernel_out(module: KernelLinear, keep: Tensor) -> None:
    slice_weight(module, 0, keep, "kernel")
    module.bias = nn.Parameter(module.bias.detach().index_select(0, keep).clone())


def _kernel_in(module: KernelLinear, keep: Tensor) -> None:
    slice_weight(module, 1, keep, "kernel")


def _kernel_to_nir(module: KernelLinear, in_shape, out_shape) -> nir.NIRNode:
    return nir.Affine(weight=module.kernel.detach().numpy().astype(np.float32),
                      bias=module.bias.detach().numpy().astype(np.float32))


sf.register_adapter(KernelAdapter(), replace=True)
register_surgery(KernelLinear, Surgery("layer", out=_kernel_out, inp=_kernel_in, weight="kernel"), replace=True)
register_nir_layer(KernelLinear, (), _kernel_to_nir, None)  # export only: Affine nodes import as nn.Linear


def kernel_net() -> nn.Sequential:
    torch.manual_seed(3)
    net = nn.Sequential(KernelLinear(12, 10), TinyIF(), KernelLinear(10, 8), TinyIF(), KernelLinear(8, 3))
    with torch.no_grad():
        net[0].kernel.mul_(3)
    return net


def kernel_data(batches: int = 2) -> list[tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(5)
    return [(torch.rand(8, 12, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(batches)]


# -- the quantizers -----------------------------------------------------------------------------------------

# name -> (apply to a model, values per group at most, per-channel groups, bits)
QUANTIZERS = {
    "cat": (lambda n: sf.wrap(n, m=4, bits=4, granularity="channel"), 4, True, 4),
    "cat-frozen": (lambda n: sf.freeze(sf.wrap(n, m=4, bits=4, granularity="channel")), 4, True, 4),
    "ttq": (lambda n: ttq(n, exclude_first_last=False), 3, False, None),
    "cluster": (lambda n: cluster(n, m=4), 4, False, 8),
    "qat": (lambda n: qat(n), 255, False, 8),
    "qpsnn": (lambda n: qpsnn(n, bits=4), 15, True, 4),
    "qpsnn-frozen": (lambda n: sf.freeze(qpsnn(n, bits=4)), 15, True, 4),
}
FOLDS = {"cat-frozen", "qpsnn-frozen"}  # frozen, per channel, integer codebook


def _assert_invariants(model: nn.Module, name: str) -> None:
    """Every compressed weight: at most m values per group, decoded exactly from its integer form."""
    _, m, per_channel, _ = QUANTIZERS[name]
    layers = sf.compressed_layers(model)
    assert layers
    for layer in layers:
        w = layer.weight.detach()
        rows = w.reshape(w.shape[0] if per_channel else 1, -1)
        assert max(int(r.unique().numel()) for r in rows) <= m
        form = layer.integer_form()
        assert isinstance(form, IntegerForm) and form.shape == w.shape
        assert torch.equal(form.decode(), w)
        if form.ints is not None:
            assert torch.equal(form.values, form.ints.to(form.values.dtype) * form.scale[:, None])


def _expected_bits(shapes: list[torch.Size], name: str) -> int:
    """Storage of compressed weights of these shapes, from the quantizer's definition."""
    _, m, per_channel, bits = QUANTIZERS[name]
    total = 0
    for shape in shapes:
        n, groups = shape.numel(), (shape[0] if per_channel else 1)
        total += n * max(1, (m - 1).bit_length()) + groups * m * (bits or 32) + (groups * 32 if bits else 0)
    return total


def test_every_quantizer_implements_the_protocol():
    for name, (make, m, _, bits) in QUANTIZERS.items():
        net = make(kernel_net())
        for layer in sf.compressed_layers(net):
            q = layer.quantizer
            assert isinstance(q, Quantizer) and layer.param == "kernel"
            assert (q.m, q.bits) == (m, bits), name
            assert q.frozen == name.endswith("frozen") and q.scales_channels == (name in FOLDS)
        _assert_invariants(net, name)


def test_baselines_compress_what_wrap_compresses():
    names = [n for n, _, _ in candidates(kernel_net())]
    assert names == ["0.kernel", "2.kernel", "4.kernel"]
    for name, (make, *_) in QUANTIZERS.items():
        assert [c.name for c in sf.compressed_layers(make(kernel_net()))] == names, name


@pytest.mark.parametrize("name", list(QUANTIZERS))
def test_prune_keeps_every_quantizer_invariant(name):
    net = QUANTIZERS[name][0](kernel_net())
    report = sf.prune(net, kernel_data(), amount=0.3, num_steps=3, progress=False)
    assert [r.neuron for r in report.layers] == ["1", "3"]
    assert tuple(net[0].kernel.shape) == (7, 12) and tuple(net[2].kernel.shape) == (6, 7)
    assert tuple(net[4].kernel.shape) == (3, 6) and tuple(net[2].bias.shape) == (6,)
    for layer in sf.compressed_layers(net):
        if QUANTIZERS[name][2]:
            assert layer.quantizer.groups == layer.weight.shape[0]
    _assert_invariants(net, name)
    out = sf.run(net, kernel_data()[0][0], num_steps=3)
    assert out.shape == (3, 8, 3)


@pytest.mark.parametrize("name", list(QUANTIZERS))
def test_fold_only_into_frozen_per_channel_integers(name):
    torch.manual_seed(4)
    net = nn.Sequential(KernelLinear(12, 10), nn.BatchNorm1d(10), TinyIF(), KernelLinear(10, 3))
    with torch.no_grad():
        net[1].running_mean.uniform_(-1, 1), net[1].running_var.uniform_(0.5, 2)
        net[1].weight.uniform_(-2, 2), net[1].bias.uniform_(-1, 1)
    net = QUANTIZERS[name][0](net).eval()
    x = torch.rand(5, 12)
    before = net[1](net[0](x)).detach()
    snapshot = copy.deepcopy(net.state_dict())
    if name not in FOLDS:
        with pytest.raises(sf.UnsupportedLayerError,
                           match=r"layer '0' has a .+; folding '1' into it would give it more distinct weights"):
            fold_batchnorm(net)
        assert isinstance(net[1], nn.BatchNorm1d)
        assert all(torch.equal(snapshot[k], v) for k, v in net.state_dict().items())
        return
    ints = net[0].parametrizations.kernel[0].codebook_int.clone()
    fold_batchnorm(net)
    assert isinstance(net[1], nn.Identity)
    assert torch.allclose(net[0](x), before, atol=1e-5)
    assert torch.equal(net[0].parametrizations.kernel[0].codebook_int, ints)  # the chip's integers stay
    _assert_invariants(net, name)


@pytest.mark.parametrize("name", list(QUANTIZERS))
def test_freeze_keeps_outputs_and_evaluate_counts_the_size(name):
    net = QUANTIZERS[name][0](kernel_net()).eval()
    x = kernel_data()[0][0]
    before = sf.run(net, x, num_steps=4)
    sf.freeze(net)
    assert torch.equal(sf.run(net, x, num_steps=4), before)
    assert all(isinstance(c.quantizer, FrozenCodebook) for c in sf.compressed_layers(net))
    _assert_invariants(net, name)
    report = sf.evaluate(net, kernel_data(), num_steps=4, progress=False)
    shapes = [torch.Size(s) for s in ((10, 12), (8, 10), (3, 8))]
    expected = _expected_bits(shapes, name) + 32 * (10 + 8 + 3)
    assert model_size_bits(net) == (120 + 80 + 24 + 21, expected)
    assert report.parameters == 245 and report.size_mb == expected / 8e6


@pytest.mark.parametrize("name", list(QUANTIZERS))
def test_export_nir_metadata_is_the_exact_integer_form(name):
    net = QUANTIZERS[name][0](kernel_net())
    x = kernel_data()[0][0]
    forms = {c.name.split(".")[0]: c.integer_form() for c in sf.compressed_layers(net)}
    graph = sf.export_nir(net, x[:1])
    for key in ("0", "2", "4"):
        node, form, q = graph.nodes[key], forms[key], sf.compressed_layers(net)[int(key) // 2].quantizer
        meta = node.metadata
        codes, book = meta["spikefit.codes"], meta["spikefit.codebook"]
        assert np.array_equal(codes, form.codes.numpy()) and codes.dtype == np.uint8
        assert np.array_equal(np.take_along_axis(book, codes.astype(np.int64), 1).reshape(node.weight.shape),
                              node.weight)
        assert (meta["spikefit.m"], meta["spikefit.granularity"]) == (q.m, q.granularity)
        if q.bits is None:
            assert "spikefit.bits" not in meta and "spikefit.codebook_int" not in meta
        else:
            assert meta["spikefit.bits"] == q.bits
            assert np.array_equal(meta["spikefit.codebook_int"], form.ints.numpy())
            assert np.array_equal(book, meta["spikefit.codebook_int"] * meta["spikefit.scale"][:, None])


@needs_snntorch
@pytest.mark.parametrize("name", ["cat", "ttq", "qpsnn-frozen"])
def test_exported_codebooks_import_frozen_with_the_same_integers(name):
    net = QUANTIZERS[name][0](kernel_net())
    forms = [c.integer_form() for c in sf.compressed_layers(net)]
    back = sf.import_nir(sf.export_nir(net, kernel_data()[0][0][:1]), "snntorch")
    layers = sf.compressed_layers(back)
    assert [c.param for c in layers] == ["weight"] * 3 and all(c.frozen for c in layers)
    for layer, form in zip(layers, forms):
        assert torch.equal(layer.quantizer.codes, form.codes)
        assert torch.equal(layer.weight, form.decode())


def test_fold_refuses_a_layer_without_one_named_weight():
    net = nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3))
    with pytest.raises(sf.UnsupportedLayerError, match=r"BatchNorm '1' follows '0' \(ReLU\)"):
        fold_batchnorm(net)


def test_scale_channels_refuses_where_it_would_break_the_codebook():
    net = sf.freeze(sf.wrap(kernel_net(), m=4, bits=4))  # a layer codebook: one scale for all channels
    q = net[0].parametrizations.kernel[0]
    assert not q.scales_channels
    with pytest.raises(sf.UnsupportedLayerError, match="frozen layer codebook cannot scale its output channels"):
        q.scale_channels(torch.ones(10))


# -- Norse: a recurrent cell's input_weights / recurrent_weights ---------------------------------------------

def norse_net():
    import norse.torch as nt

    torch.manual_seed(2)
    net = nt.SequentialState(nn.Flatten(), nn.Linear(16, 12), nt.LIFRecurrentCell(12, 8), nn.Linear(8, 3))
    with torch.no_grad():
        net[1].weight.mul_(4)
    return net


def norse_data():
    g = torch.Generator().manual_seed(1)
    return [(torch.rand(6, 16, generator=g) * 3, torch.arange(6) % 3)]


@needs_norse
@pytest.mark.parametrize("name", list(QUANTIZERS))
def test_norse_recurrent_weights_evaluate_check_and_freeze(name):
    net = QUANTIZERS[name][0](norse_net())
    assert [c.name for c in sf.compressed_layers(net)] == ["1", "2.input_weights", "2.recurrent_weights", "3"]
    _assert_invariants(net, name)
    report = sf.evaluate(net, norse_data(), num_steps=3, progress=False)
    shapes = [torch.Size(s) for s in ((12, 16), (8, 12), (8, 8), (3, 8))]
    assert report.parameters == 192 + 96 + 64 + 24 + 15
    assert model_size_bits(net)[1] == _expected_bits(shapes, name) + 32 * 15
    # check reads each connection layer's bits from its quantizer, the cell's own weights included
    int8 = sf.check(net, "generic-45nm-int8")
    bits = QUANTIZERS[name][3]
    assert sorted(v.layer for v in int8.violations if v.rule == "weight_bits") == (
        [] if bits else ["1", "2.input_weights", "2.recurrent_weights", "3"])
    if QUANTIZERS[name][1] <= 4:  # the invariant: at most m values per neuron fits TrueNorth's 4
        assert not [v for v in sf.check(net, "truenorth").violations if v.rule == "distinct_weights_per_neuron"]
    summary = sf.codebook_summary(net).records()
    assert [r["layer"] for r in summary] == ["1", "2.input_weights", "2.recurrent_weights", "3"]
    assert all(r["m_effective"] <= QUANTIZERS[name][1] for r in summary)
    net.eval()
    x = norse_data()[0][0]
    before = sf.run(net, x, num_steps=3)
    sf.freeze(net)
    assert torch.equal(sf.run(net, x, num_steps=3), before)
    _assert_invariants(net, name)
