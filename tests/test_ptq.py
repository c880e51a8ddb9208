"""One-shot post-training compression (SBC + one-shot CAT): Hessian, OBS, codebooks, the verb's contract."""

import copy

import pytest
import torch
from torch import nn

import snn_spikefit as sf
from snn_spikefit.errors import SpikeFitTypeError, SpikeFitValueError, UnsupportedLayerError
from snn_spikefit.ptq.api import _hessian
from snn_spikefit.ptq.plan import layer_plans as _plans
from snn_spikefit.ptq.hessian import leak_kernel
from snn_spikefit.ptq.obs import gptq, nearest, obs_order, obs_prune
from snn_spikefit.quantize.codebook import FrozenCodebook
from tests.conftest import needs_snntorch

T = 5


def _leaky(beta):
    import snntorch as snn

    return snn.Leaky(beta=beta, threshold=1e9, init_hidden=True)  # never fires: the membrane is K x


def _explicit_kernel(decay):
    """K[i, j] = decay^(i - j) for j <= i, written out."""
    k = torch.zeros(T, T, dtype=torch.float64)
    for i in range(T):
        for j in range(i + 1):
            k[i, j] = decay ** (i - j)
    return k


def _hessian_of(model, x):
    plans = _plans(model, [x], None, None, None)
    return plans[0], _hessian(model, plans[0], [x], None).hessian()


# -- the Hessian -----------------------------------------------------------------------------------

@needs_snntorch
@pytest.mark.parametrize("tau", [2.0, None])  # tau = 2 (decay (tau - 1) / tau = 0.5), and IF (no leak)
def test_dense_hessian_equals_explicit_sum(tau):
    decay = 1.0 if tau is None else (tau - 1) / tau
    model = nn.Sequential(nn.Linear(3, 4), _leaky(decay))
    spikes = (torch.rand(T, 6, 3) < 0.4).float()
    plan, h = _hessian_of(model, spikes)
    assert plan.decays == (decay,) and plan.neuron == "1"
    k = _explicit_kernel(decay)
    expected = torch.zeros(3, 3, dtype=torch.float64)
    for b in range(6):
        v = k @ spikes[:, b].double()              # [T, in]
        expected += v.T @ v
    expected *= 2 / 6
    assert torch.allclose(h, expected, rtol=1e-12, atol=1e-12)
    assert h.abs().sum() > 0


@needs_snntorch
@pytest.mark.parametrize("tau", [2.0, None])
def test_conv_hessian_equals_explicit_sum_over_patches(tau):
    decay = 1.0 if tau is None else (tau - 1) / tau
    model = nn.Sequential(nn.Conv2d(2, 3, 2), _leaky(decay))
    spikes = (torch.rand(T, 2, 2, 4, 4) < 0.4).float()
    _, h = _hessian_of(model, spikes)
    k = _explicit_kernel(decay)
    expected = torch.zeros(8, 8, dtype=torch.float64)
    positions = 0
    for b in range(2):
        for p in range(3):
            for q in range(3):
                s = spikes[:, b, :, p:p + 2, q:q + 2].reshape(T, 8).double()   # the patch at every step
                v = k @ s
                expected += v.T @ v
                positions += 1
    expected *= 2 / positions
    assert torch.allclose(h, expected, rtol=1e-12, atol=1e-12)


def _assert_leak_kernel(cell, membrane):
    """The membrane a threshold-free `cell` reaches at each step equals leak_kernel applied to its input."""
    decays = sf.get_adapter(nn.Sequential(cell)).membrane_decays(cell)
    x = torch.rand(T, 1, 3)
    mem = []
    for t in range(T):
        cell(x[t])
        mem.append(membrane().detach().clone())
    expected = torch.einsum("ts,sbi->tbi", leak_kernel([float(d) for d in decays], T).float(), x)
    assert torch.allclose(torch.stack(mem), expected, atol=1e-5)


@needs_snntorch
@pytest.mark.parametrize("kind", ["leaky", "if", "synaptic"])
def test_leak_kernel_matches_the_neurons_own_decay(kind):
    import snntorch as snn

    if kind == "synaptic":
        neuron = snn.Synaptic(alpha=0.8, beta=0.6, threshold=1e9, init_hidden=True)
    else:
        neuron = _leaky(0.7 if kind == "leaky" else 1.0)
    neuron.reset_mem()
    _assert_leak_kernel(neuron, lambda: neuron.mem)


# -- OBS and GPTQ on a quadratic -------------------------------------------------------------------------

def _quadratic(n=6):
    a = torch.randn(40, n, dtype=torch.float64) @ torch.randn(n, n, dtype=torch.float64)
    return a.T @ a / 40 + 0.1 * torch.eye(n, dtype=torch.float64)


def test_obs_pruning_one_weight_is_the_closed_form_optimum():
    h, w = _quadratic(), torch.randn(1, 6, dtype=torch.float64)
    hinv = torch.linalg.inv(h)
    order, cost = obs_order(w, hinv, block=1)
    # brute force: for every q, the best w' with w'_q = 0 minimises (w' - w) H (w' - w)^T
    best = []
    for q in range(6):
        keep = [i for i in range(6) if i != q]
        opt = w[0].clone()
        opt[keep] += torch.linalg.solve(h[keep][:, keep], h[keep, q] * w[0, q])
        opt[q] = 0
        d = opt - w[0]
        best.append((float(d @ h @ d), opt))
        assert cost[0, q] == pytest.approx(float(w[0, q] ** 2 / hinv[q, q])) if q == order[0, 0] else True
    q_star = min(range(6), key=lambda q: best[q][0])
    assert int(order[0, 0]) == q_star
    assert float(cost[0, q_star]) == pytest.approx(best[q_star][0], rel=1e-9)
    pruned, mask = obs_prune(w, hinv, order, torch.tensor([1]))
    assert torch.allclose(pruned[0], best[q_star][1], atol=1e-12) and pruned[0, q_star] == 0
    assert mask.sum() == 1


def test_obs_pruning_many_weights_matches_the_constrained_least_squares():
    h, w = _quadratic(8), torch.randn(3, 8, dtype=torch.float64)
    hinv = torch.linalg.inv(h)
    order, _ = obs_order(w, hinv, block=2)
    counts = torch.tensor([3, 5, 0])
    pruned, mask = obs_prune(w, hinv, order, counts)
    for r in range(3):
        gone = order[r, :counts[r]].tolist()
        keep = [i for i in range(8) if i not in gone]
        expected = w[r].clone()
        if gone:
            expected[keep] += torch.linalg.solve(h[keep][:, keep], h[keep][:, gone] @ w[r, gone])
            expected[gone] = 0
        assert torch.allclose(pruned[r], expected, atol=1e-10)
        assert int(mask[r].sum()) == counts[r]


def test_gptq_latent_reproduces_its_codes_and_beats_rounding():
    h = _quadratic(12)
    w = 0.5 * torch.randn(64, 12)
    values = torch.linspace(-1.5, 1.5, 7)[None]
    codes, quantized, latent = gptq(w, h, values)
    assert torch.equal(nearest(latent, values.expand(64, -1)), codes)
    rtn = values[0][nearest(w, values.expand(64, -1))]
    err = lambda q: float((((q - w).double() @ h) * (q - w).double()).sum())  # noqa: E731
    assert err(quantized) <= err(rtn)


# -- the verb -------------------------------------------------------------------------------------------------

def _net():
    from snn_spikefit.zoo.snntorch import conv_snn

    net = conv_snn(1, 10, 8, channels=(4, 8), batch_norm=True)
    for m in net.modules():  # non-trivial BatchNorm statistics: the gain enters the Hessian
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    return net.eval()  # a trained model, as users hand it over


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_state(model, state):
    now = model.state_dict()
    return now.keys() == state.keys() and all(torch.equal(now[k], state[k]) for k in state)


@needs_snntorch
def test_sparsity_zero_and_no_bits_leaves_the_model_bit_identical():
    net, x = _net(), torch.rand(16, 1, 8, 8)
    state, out = _state(net), sf.run(net, x, num_steps=4)
    report = sf.compress_posttraining(net, x, progress=False)
    assert _same_state(net, state) and not sf.is_wrapped(net)
    assert torch.equal(sf.run(net, x, num_steps=4), out)
    assert [r.pruned for r in report.layers] == [0, 0, 0] and report.to_dict()["layers"][0]["layer"] == "0"


@needs_snntorch
def test_sparsity_is_reached_and_zeros_stay_zero_under_quantization():
    net, x = _net(), torch.rand(32, 1, 8, 8)
    report = sf.compress_posttraining(net, x, sparsity=0.6, bits=4, progress=False)
    weights = [c.weight for c in sf.compressed_layers(net)]
    zeros = sum(int((w == 0).sum()) for w in weights)
    total = sum(w.numel() for w in weights)
    assert report.achieved_sparsity == pytest.approx(int(0.6 * total) / total)
    assert zeros >= int(0.6 * total)
    assert report.layers[0].bn_gain and report.layers[0].decays == (0.5,) and report.layers[-1].neuron == "-"
    for c in sf.compressed_layers(net):
        assert int(c.weight.unique().numel()) <= 15


@needs_snntorch
@pytest.mark.parametrize("granularity", ["layer", "channel"])
def test_one_shot_cat_gives_at_most_m_values_and_cat_integers(granularity):
    net, x = _net(), torch.rand(32, 1, 8, 8)
    sf.compress_posttraining(net, x, m=3, bits=4, granularity=granularity, progress=False)
    layers = sf.compressed_layers(net)
    assert len(layers) == 3
    for c in layers:
        q = c.quantizer
        assert isinstance(q, FrozenCodebook) and q.m == 3 and q.bits == 4 and q.granularity == granularity
        rows = c.weight.detach().reshape(q.groups, -1)
        assert int(max(len(r.unique()) for r in rows)) <= 3
        assert q.codes.dtype == torch.uint8 and q.codebook_int.dtype == torch.int8
        assert torch.equal(q.values, q.codebook_int.float() * q.scale[:, None])
        assert int(q.codebook_int.abs().max()) <= 7
        assert torch.equal(c.weight, q.values.gather(1, q.codes.long()).reshape(c.weight.shape))


@needs_snntorch
def test_post_training_result_is_what_wrap_and_freeze_make_and_cat_fine_tunes_it():
    net, x = _net(), torch.rand(32, 1, 8, 8)
    sf.compress_posttraining(net, x, m=4, bits=4, progress=False)
    out = sf.run(net, x, num_steps=4)
    frozen = {c.name: {k: v.clone() for k, v in c.quantizer.state_dict().items()} for c in sf.compressed_layers(net)}
    sf.wrap(net, init="frozen")
    assert all(c.quantizer.kind == "trainable codebook" for c in sf.compressed_layers(net))
    assert torch.equal(sf.run(net, x, num_steps=4), out)            # same weights, now trainable
    loss = sf.run(net, x, num_steps=4).sum() + sf.commitment_loss(net)
    loss.backward()
    assert net[0].parametrizations.weight.original.grad is not None
    sf.freeze(net)                                                   # the same frozen layer as before
    for c in sf.compressed_layers(net):
        again = c.quantizer.state_dict()
        assert again.keys() == frozen[c.name].keys()
        assert all(torch.equal(again[k], frozen[c.name][k]) for k in again)


@needs_snntorch
def test_uniform_bits_uses_the_whole_integer_grid():
    net, x = _net(), torch.rand(32, 1, 8, 8)
    report = sf.compress_posttraining(net, x, bits=3, progress=False)
    for c in sf.compressed_layers(net):
        assert c.quantizer.m == 7 and int(c.weight.unique().numel()) <= 7
    assert report.method == "GPTQ 3-bit uniform" and report.to_dict()["method"] == report.method
    assert report.to_csv().splitlines()[0].startswith("layer,type,neuron,decays")


# -- bad input: named errors, the model untouched -------------------------------------------------------------

@needs_snntorch
@pytest.mark.parametrize("calib, kwargs, error, phrase", [
    (None, {}, SpikeFitValueError, "calib_data is None"),
    (torch.zeros(0, 1, 8, 8), {"bits": 4}, SpikeFitValueError, "no samples"),
    ([], {"bits": 4}, SpikeFitValueError, "no samples"),
    ("digits", {"bits": 4}, SpikeFitTypeError, "calib_data must be"),
    (torch.rand(4, 1, 8, 8), {"sparsity": 1.0}, SpikeFitValueError, r"sparsity=1.0 .* \[0, 1\)"),
    (torch.rand(4, 1, 8, 8), {"sparsity": -0.1}, SpikeFitValueError, "sparsity=-0.1"),
    (torch.rand(4, 1, 8, 8), {"m": 8, "bits": 2}, SpikeFitValueError, "m=8 is not allowed with bits=2"),
    (torch.rand(4, 1, 8, 8), {"bits": 9}, SpikeFitValueError, "bits=9"),
    (torch.rand(4, 1, 8, 8), {"m": 1}, SpikeFitValueError, "m=1"),
    (torch.rand(4, 1, 8, 8), {"m": 4, "granularity": "neuron"}, SpikeFitValueError, "granularity='neuron'"),
])
def test_bad_arguments_are_named_and_change_nothing(calib, kwargs, error, phrase):
    net = _net()
    state = _state(net)
    with pytest.raises(error, match=phrase):
        sf.compress_posttraining(net, calib, progress=False, **kwargs)
    assert _same_state(net, state) and not sf.is_wrapped(net)


@needs_snntorch
def test_a_layer_it_cannot_handle_is_named_and_can_be_excluded():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, groups=1, padding="same"), _leaky(0.5), nn.Flatten(),
                        nn.Linear(4 * 8 * 8, 3))
    state = _state(net)
    with pytest.raises(UnsupportedLayerError, match=r"'0'.*exclude=\['0'\]"):
        sf.compress_posttraining(net, torch.rand(4, 1, 8, 8), bits=4, progress=False)
    assert _same_state(net, state)
    report = sf.compress_posttraining(net, torch.rand(4, 1, 8, 8), bits=4, exclude="0", progress=False)
    assert [r.layer for r in report.layers] == ["3"] and not sf.is_wrapped(net[0])


@needs_snntorch
def test_a_kernel_larger_than_any_probe_input_is_compressed():
    # a 9 x 9 kernel on 12 x 12 inputs: the support check looks at the layer, not at an 8 x 8 trial unfold
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 9), _leaky(0.5), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    report = sf.compress_posttraining(net, torch.rand(6, 1, 12, 12), m=3, bits=8, progress=False)
    assert [r.layer for r in report.layers] == ["0", "3"]
    assert int(sf.compressed_layers(net)[0].weight.unique().numel()) <= 3


class _Twice(nn.Module):
    """Calls its second layer twice per step: compression fails after the first layer was done."""

    def __init__(self):
        super().__init__()
        self.fc1, self.lif, self.fc2 = nn.Linear(6, 5), _leaky(0.5), nn.Linear(5, 5)

    def forward(self, x):
        return self.fc2(self.fc2(self.lif(self.fc1(x))))


@needs_snntorch
def test_a_failure_half_way_restores_the_model():
    net = _Twice()
    state = _state(net)
    with pytest.raises(UnsupportedLayerError, match="'fc2' was called 8 times"):
        sf.compress_posttraining(net, torch.rand(8, 6), sparsity=0.5, bits=4, progress=False)
    assert _same_state(net, state) and not sf.is_wrapped(net)


def test_wrapped_model_is_refused():
    net = sf.wrap(nn.Sequential(nn.Linear(4, 3)), m=2)
    with pytest.raises(SpikeFitValueError, match="already carries quantizers"):
        sf.compress_posttraining(net, torch.rand(4, 4), bits=4, progress=False)


# -- the pipeline and the command line -------------------------------------------------------------------------

@needs_snntorch
@pytest.mark.slow  # trains a small model, then runs compress end to end
def test_cli_compress_posttraining_fits_truenorth_without_training(tmp_path):
    import contextlib
    import io
    import json
    import warnings

    from snn_spikefit.cli import main
    from snn_spikefit.data.datasets import digits, make_loader
    from snn_spikefit.zoo.snntorch import dense_snn

    model = dense_snn(64, 10, hidden=(16,))
    sf.fit(model, make_loader(digits()[0], 64, shuffle=True), epochs=2, num_steps=4, lr=1e-2, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sf.export_nir(model, torch.zeros(1, 1, 8, 8), tmp_path / "m.nir")
    out = tmp_path / "small.nir"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = main([str(a) for a in ("compress", tmp_path / "m.nir", "--hardware", "truenorth", "--method",
                                      "posttraining", "--calib", 64, "--limit", 256, "--no-progress", "--threads",
                                      1, "--json", "--out", out)])
    assert code == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["settings"]["method"] == "posttraining" and record["settings"]["epochs"] is None
    assert record["posttraining"]["samples"] == 64 and record["posttraining"]["m"] == 4
    assert record["check_after"]["ok"] and all(r["distinct_per_neuron_after"] <= 4 for r in record["layers"])
    assert record["after"]["accuracy"] > 50


def test_compress_refuses_channel_pruning_with_posttraining():
    with pytest.raises(SpikeFitValueError, match="prune .* not allowed with method='posttraining'"):
        sf.compress(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), "digits", hardware="truenorth",
                    method="posttraining", prune=0.5, progress=False)
    with pytest.raises(SpikeFitValueError, match="method='svd' is not allowed"):
        sf.compress(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), "digits", hardware="truenorth", method="svd")


# -- what zero weights free on each chip ---------------------------------------------------------------------

def test_zero_weights_free_synapses_only_where_the_chip_stores_them_sparse():
    from snn_spikefit.deploy.metrics import model_size_bits

    net = nn.Sequential(nn.Linear(64, 8))
    dense_params, dense_bits = model_size_bits(net)
    with torch.no_grad():
        net[0].weight[:, 16:] = 0                               # 75 % zero
    assert model_size_bits(net) == (dense_params, dense_bits)   # dense storage: zeros cost as much
    _, sparse = model_size_bits(net, sparse=True)
    assert sparse == 8 * 16 * (32 + 6) + 8 * 32                 # non-zero x (value + 6-bit index) + biases
    assert sf.get_profile("truenorth").synapse_memory == "dense"
    assert sf.get_profile("loihi").synapse_memory == "nonzero"
    assert "synapse_memory" in sf.get_profile("loihi").sources
    data = [(torch.rand(4, 64), torch.zeros(4, dtype=torch.long))]
    on_loihi = sf.evaluate(net, data, hardware="loihi", num_steps=1, progress=False)
    on_truenorth = sf.evaluate(net, data, hardware="truenorth", num_steps=1, progress=False)
    assert on_loihi.size_mb == sparse / 8e6 and on_truenorth.size_mb == dense_bits / 8e6


def test_synapse_budget_counts_whole_crossbars_on_dense_chips():
    net = nn.Sequential(nn.Linear(64, 8))
    with torch.no_grad():
        net[0].weight[:, 16:] = 0
    small = lambda kind: sf.HardwareProfile(name=f"tiny-{kind}", max_synapses=200, synapse_memory=kind)  # noqa: E731
    dense = sf.check(net, small("dense"))
    assert [v.actual for v in dense.violations if v.rule == "synapses"] == [512]
    assert not [v for v in sf.check(net, small("nonzero")).violations if v.rule == "synapses"]  # 128 <= 200
    with pytest.raises(SpikeFitValueError, match="synapse_memory='blocks'"):
        sf.HardwareProfile(name="bad", synapse_memory="blocks")


@needs_snntorch
def test_recalibrate_re_estimates_batchnorm_on_the_calibration_set_only():
    net, x = _net(), torch.rand(32, 1, 8, 8)
    plain, before = copy.deepcopy(net), net[1].running_var.clone()
    sf.compress_posttraining(plain, x, m=3, bits=4, progress=False)
    sf.compress_posttraining(net, x, m=3, bits=4, recalibrate=True, progress=False)
    assert torch.equal(plain[1].running_var, before)                       # untouched without recalibrate
    assert not torch.allclose(net[1].running_var, plain[1].running_var)
    assert net[1].momentum == plain[1].momentum and not net.training        # modes and momenta as they were
    # the statistics are those of the calibration inputs through the compressed first layer
    with torch.no_grad():
        pre = net[0](x)
    assert torch.allclose(net[1].running_mean, pre.mean(dim=(0, 2, 3)), atol=1e-5)


@needs_snntorch
def test_a_neuron_without_a_known_decay_is_named():
    import snntorch as snn

    net = nn.Sequential(nn.Linear(4, 3), snn.RLeaky(beta=0.5, linear_features=3, init_hidden=True), nn.Linear(3, 2))
    state = _state(net)
    with pytest.raises(UnsupportedLayerError, match=r"layer '0' feeds .*RLeaky.*exclude=\['0'\]"):
        sf.compress_posttraining(net, torch.rand(4, 4), bits=4, progress=False)
    assert _same_state(net, state)


@pytest.mark.parametrize("kind", ["lif", "if"])
def test_spikingjelly_leak_kernel_matches_its_neuron(kind):
    sj = pytest.importorskip("spikingjelly.activation_based.neuron")
    cell = sj.LIFNode(tau=2.0, decay_input=False, v_threshold=1e9) if kind == "lif" else sj.IFNode(v_threshold=1e9)
    cell.reset()
    _assert_leak_kernel(cell, lambda: cell.v)
