"""CAT: the m-value invariant, gradients, state dicts, freeze/strip, errors."""

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import snn_spikefit as sf
from snn_spikefit.quantize.codebook import CodebookWeight, FrozenCodebook, quantize_codebook

from conftest import needs_snntorch


def _models():
    out = {
        "linear_bias": nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 5)),
        "linear_nobias": nn.Sequential(nn.Linear(20, 16, bias=False), nn.ReLU(), nn.Linear(16, 5, bias=False)),
        "conv": nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 3), nn.Flatten(),
                              nn.Linear(4 * 6 * 6, 3)),
        "conv1d": nn.Sequential(nn.Conv1d(2, 5, 3), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 6, 3)),
    }
    return out


def _input(name):
    return {"conv": torch.rand(3, 2, 8, 8), "conv1d": torch.rand(3, 2, 8)}.get(name, torch.rand(3, 20))


def _snn_models():
    from snn_spikefit.zoo.snntorch import conv_snn, dense_snn, recurrent_snn

    return {
        "snn_conv": (conv_snn(1, 10, 8, (4, 8)), torch.rand(3, 1, 8, 8)),
        "snn_conv_nobias": (conv_snn(1, 10, 8, (4, 8), bias=False), torch.rand(3, 1, 8, 8)),
        "snn_dense": (dense_snn(64, 10, (32,)), torch.rand(3, 1, 8, 8)),
        "snn_recurrent": (recurrent_snn(64, 16, 10), torch.rand(3, 1, 8, 8)),
    }


def _check_invariant(model, m, bits):
    layers = sf.compressed_layers(model)
    assert layers
    for layer in layers:
        w = layer.weight
        q = layer.quantizer
        groups = w.reshape(q.groups, -1)
        if isinstance(q, CodebookWeight):
            values = q.codebook_values().detach()
        else:
            values = q.values
        for g in range(q.groups):
            uniq = groups[g].unique()
            assert uniq.numel() <= m
            # every weight is bit-exactly one of the group's codebook entries
            assert torch.isin(groups[g], values[g]).all()
        if bits is not None:
            if isinstance(q, CodebookWeight):
                _, ints, scale = quantize_codebook(q.codebook, bits)
            else:
                ints, scale = q.codebook_int.float(), q.scale
            k = torch.round(groups / scale[:, None])
            assert torch.equal(groups, k * scale[:, None])
            assert int(k.abs().max()) <= 2 ** (bits - 1) - 1


def _steps_both_modes(model, x, opt, m, bits, task):
    """Two optimiser steps in train mode and two in eval mode, checking the CAT invariant after each."""
    for mode in ("train", "eval"):
        getattr(model, mode)()
        for _ in range(2):
            loss = task(model(x)) + sf.commitment_loss(model)
            opt.zero_grad()
            loss.backward()
            opt.step()
            _check_invariant(model, m, bits)


@pytest.mark.parametrize("name", list(_models()))
@pytest.mark.parametrize("granularity", ["layer", "channel"])
@pytest.mark.parametrize("m,bits", [(4, None), (4, 4), (3, 2), (16, 8)])
def test_invariant_train_and_eval(name, granularity, m, bits):
    model = _models()[name]
    sf.wrap(model, m=m, bits=bits, granularity=granularity)
    x = _input(name)
    _steps_both_modes(model, x, torch.optim.SGD(model.parameters(), lr=0.5), m, bits, lambda y: y.pow(2).sum())


@needs_snntorch
@pytest.mark.parametrize("name", ["snn_conv", "snn_conv_nobias", "snn_dense", "snn_recurrent"])
@pytest.mark.parametrize("granularity", ["layer", "channel"])
def test_invariant_snntorch(name, granularity):
    model, x = _snn_models()[name]
    sf.wrap(model, m=4, bits=4, granularity=granularity)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for mode in ("train", "eval"):
        getattr(model, mode)()
        out = sf.run(model, x, num_steps=3)
        loss = out.mean(0).pow(2).sum() + sf.commitment_loss(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
        _check_invariant(model, 4, 4)
    if name == "snn_recurrent":
        names = [c.name for c in sf.compressed_layers(model)]
        assert "2.recurrent" in names  # RLeaky's recurrent weights are compressed too


def test_gradients_reach_latent_and_codebook():
    model = sf.wrap(nn.Linear(10, 4), m=4)
    out = model(torch.randn(8, 10)).pow(2).sum()
    out.backward()
    latent = model.parametrizations.weight.original
    book = model.parametrizations.weight[0].codebook
    assert latent.grad is not None and latent.grad.abs().sum() > 0
    assert book.grad is not None and book.grad.abs().sum() > 0
    # straight-through: the latent gradient equals the gradient w.r.t. the effective weight
    x = torch.randn(8, 10)
    model.zero_grad()
    model(x).sum().backward()
    expected = torch.ones(8, 4).T @ x
    assert torch.allclose(latent.grad, expected)


def test_commitment_gradient_goes_to_codebook_only():
    model = sf.wrap(nn.Linear(10, 4), m=4)
    sf.commitment_loss(model).backward()
    assert model.parametrizations.weight.original.grad is None
    assert model.parametrizations.weight[0].codebook.grad.abs().sum() > 0


def test_commitment_loss_matches_eq7():
    model = sf.wrap(nn.Linear(10, 4), m=3)
    w = model.parametrizations.weight.original.detach()
    book = model.parametrizations.weight[0].codebook.detach()[0]
    nearest = book[(w.reshape(-1, 1) - book).pow(2).argmin(dim=1)]
    expected = (nearest - w.reshape(-1)).pow(2).mean()
    assert torch.allclose(sf.commitment_loss(model), expected)


def test_weight_computed_once_per_forward_pass_over_time():
    model = sf.wrap(nn.Linear(10, 4), m=4)
    q = model.parametrizations.weight[0]
    calls = []
    q.register_forward_hook(lambda *a: calls.append(1))
    assign_calls = []
    orig = q.assign
    q.assign = lambda *a, **k: (assign_calls.append(1), orig(*a, **k))[1]
    q.invalidate()  # registration already computed (and cached) the weight once
    x = torch.randn(2, 10)
    out = sum(model(x) for _ in range(5))  # T = 5 steps, one forward pass
    assert len(assign_calls) == 1
    out.sum().backward()
    model(x)  # after backward the graph is freed: recomputed
    assert len(assign_calls) == 2
    with torch.no_grad():
        model.parametrizations.weight.original.add_(0.1)  # an optimizer step
    model(x)
    assert len(assign_calls) == 3


def test_gradient_accumulation_works_with_cache():
    model = sf.wrap(nn.Linear(10, 4), m=4)
    x = torch.randn(2, 10)
    model(x).sum().backward()
    model(x).sum().backward()  # would fail if a freed graph were reused
    g = model.parametrizations.weight.original.grad
    model.zero_grad()
    model(x).sum().backward()
    assert torch.allclose(g, 2 * model.parametrizations.weight.original.grad)


@pytest.mark.parametrize("granularity", ["layer", "channel"])
def test_state_dict_round_trip(granularity):
    model = _models()["conv"]
    sf.wrap(model, m=4, bits=4, granularity=granularity)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = _input("conv")
    for _ in range(3):
        opt.zero_grad()
        (model(x).pow(2).sum() + sf.commitment_loss(model)).backward()
        opt.step()
    fresh = sf.wrap(_models()["conv"], m=4, bits=4, granularity=granularity)
    fresh.load_state_dict(model.state_dict())
    model.eval(), fresh.eval()
    assert torch.equal(model(x), fresh(x))


@pytest.mark.parametrize("bits", [None, 4])
def test_freeze_and_strip_keep_outputs(bits):
    model = sf.wrap(_models()["conv"], m=4, bits=bits, granularity="channel")
    model.eval()
    x = _input("conv")
    before = model(x)
    sf.freeze(model)
    assert torch.equal(model(x), before)
    _check_invariant(model, 4, bits)
    for layer in sf.compressed_layers(model):
        q = layer.quantizer
        assert isinstance(q, FrozenCodebook)
        assert q.codes.dtype == torch.uint8
        if bits is not None:
            assert q.codebook_int.dtype == torch.int8
            decoded = q.scale[:, None] * q.codebook_int.float().gather(1, q.codes.long())
            assert torch.equal(layer.module.weight, decoded.reshape(layer.module.weight.shape))
    frozen_sd = copy.deepcopy(model)
    sf.strip(model)
    assert not sf.is_wrapped(model)
    assert type(model[0]) is nn.Conv2d
    assert not parametrize.is_parametrized(model[0])
    assert torch.equal(model(x), before)
    assert model[0].weight.requires_grad
    assert torch.equal(frozen_sd(x), before)


def test_strip_of_trainable_wrap_keeps_outputs():
    model = sf.wrap(_models()["linear_bias"], m=3)
    x = _input("linear_bias")
    before = model(x)
    sf.strip(model)
    assert torch.equal(model(x), before)
    assert type(model[0].weight) is nn.Parameter


def test_codes_dtype_widens_with_m():
    model = sf.wrap(nn.Linear(40, 20), m=300, init="linear")
    sf.freeze(model)
    assert model.parametrizations.weight[0].codes.dtype == torch.uint16


def test_isinstance_and_parameters_are_ordinary():
    model = sf.wrap(nn.Conv2d(2, 3, 3), m=4)
    assert isinstance(model, nn.Conv2d)
    names = dict(model.named_parameters())
    assert set(names) == {"bias", "parametrizations.weight.original", "parametrizations.weight.0.codebook"}


def test_include_exclude_and_summary():
    model = _models()["linear_bias"]
    sf.wrap(model, m=4, bits=4, exclude=["2"])
    names = [c.name for c in sf.compressed_layers(model)]
    assert names == ["0"]
    table = sf.codebook_summary(model)
    row = table.records()[0]
    assert row["layer"] == "0" and row["m"] == 4 and row["bits"] == 4
    assert row["m_effective"] <= 4 and row["weights"] == 320
    assert all(abs(v) <= 7 for v in row["codebook"])
    assert "codebook summary" in str(table)


def test_merged_codewords_reported_as_effective_m():
    lin = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0, 0.01, -1.0]]))
    sf.wrap(lin, m=3, bits=2, init="kmeans")  # 2 bits: only -1, 0, 1 (x scale)
    lin.eval()
    assert sf.codebook_summary(lin).records()[0]["m_effective"] == 3
    lin2 = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        lin2.weight.copy_(torch.tensor([[1.0, 0.9, 0.95, -1.0]]))
    sf.wrap(lin2, m=3, bits=2, reseed=False)
    lin2.eval()
    eff = sf.codebook_summary(lin2).records()[0]["m_effective"]
    assert eff == int(lin2.weight.unique().numel()) == 2  # 0.9 and 1.0 merge at 2 bits


def test_dead_codewords_reseeded_in_training():
    lin = nn.Linear(50, 1, bias=False)
    sf.wrap(lin, m=4)
    q = lin.parametrizations.weight[0]
    with torch.no_grad():
        q.codebook[0, 3] = 100.0  # far from every weight: dead
    lin.eval()
    assert lin.weight.unique().numel() == 3
    lin.train()
    _ = lin.weight
    assert q.reseeded >= 1
    assert lin.weight.unique().numel() == 4


@pytest.mark.parametrize("init", ["kmeans", "linear", "quantile"])
def test_inits_give_m_distinct_sorted_codewords(init):
    model = sf.wrap(nn.Linear(30, 8), m=5, init=init, granularity="channel")
    book = model.parametrizations.weight[0].codebook
    assert book.shape == (8, 5)
    assert (book[:, 1:] > book[:, :-1]).all()


def test_constant_weights_still_get_m_codewords():
    lin = nn.Linear(6, 2)
    with torch.no_grad():
        lin.weight.fill_(0.5)
    sf.wrap(lin, m=4)
    assert lin.parametrizations.weight[0].codebook.unique().numel() == 4
    assert torch.equal(lin.weight, torch.full((2, 6), lin.weight[0, 0].item()))


# -- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"m": 1}, ValueError, r"m=1 is not allowed.*at least 2"),
        ({"m": 2.5}, TypeError, r"m must be an int, got 2.5"),
        ({"m": 4, "bits": 1}, ValueError, r"bits=1 is not allowed.*2\.\.8"),
        ({"m": 4, "bits": 9}, ValueError, r"bits=9 is not allowed"),
        ({"m": 8, "bits": 3}, ValueError, r"m=8 is not allowed with bits=3.*at most 2\*\*bits - 1 = 7"),
        ({"m": 4, "init": "random"}, ValueError, r"init='random' is not allowed.*kmeans"),
        ({"m": 4, "granularity": "neuron"}, ValueError, r"granularity='neuron' is not allowed.*channel"),
        ({"m": 4, "include": ["nope"]}, ValueError, r"include='nope' matches no compressible layer.*\['0', '2'\]"),
    ],
)
def test_bad_arguments_leave_model_unchanged(kwargs, exc, match):
    model = _models()["linear_bias"]
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(exc, match=match) as info:
        sf.wrap(model, **kwargs)
    assert isinstance(info.value, sf.SpikeFitError)
    assert not sf.is_wrapped(model)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_no_compressible_layer():
    with pytest.raises(sf.SpikeFitValueError, match="no compressible layer"):
        sf.wrap(nn.Sequential(nn.ReLU(), nn.Flatten()), m=4)


def test_wrapping_twice_is_refused():
    model = sf.wrap(_models()["linear_bias"], m=4)
    with pytest.raises(sf.SpikeFitValueError, match="already wrapped"):
        sf.wrap(model, m=4)


def test_nan_weights_refused_and_nothing_changed():
    model = _models()["linear_bias"]
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")
    with pytest.raises(sf.SpikeFitValueError, match=r"layer '2' \(Linear\) has 1 NaN/inf weights"):
        sf.wrap(model, m=4)
    assert not parametrize.is_parametrized(model[0])  # layer 0 was fine but must not be wrapped


def test_not_wrapped_errors():
    for fn in (sf.commitment_loss, sf.freeze, sf.strip, sf.codebook_summary):
        with pytest.raises(sf.NotWrappedError, match="snn_spikefit.wrap"):
            fn(nn.Linear(3, 2))


def test_copy_survives_strip_and_freeze_of_original():
    # PyTorch shares the parametrized class between a module and its deepcopy;
    # stripping one must not break the other.
    model = sf.wrap(_models()["linear_bias"], m=4)
    x = _input("linear_bias")
    copies = [copy.deepcopy(model) for _ in range(2)]
    sf.freeze(model)
    sf.strip(copies[0])
    for c in copies:
        assert c(x).shape == (3, 5)
    assert sf.compressed_layers(copies[1])[0].quantizer.__class__.__name__ == "CodebookWeight"


def test_deepcopy_of_wrapped_model_after_forward():
    model = sf.wrap(_models()["linear_bias"], m=4)
    model(_input("linear_bias")).sum()
    clone = copy.deepcopy(model)
    x = _input("linear_bias")
    assert torch.equal(clone(x), model(x))


def test_large_kmeans_uses_lloyd_and_is_close_to_exact(monkeypatch):
    import snn_spikefit.quantize.init as init
    from snn_spikefit.quantize.kmeans1d import kmeans_1d_batched

    w = torch.randn(2, 3000)
    exact = kmeans_1d_batched(w, 8)
    monkeypatch.setattr(init, "EXACT_KMEANS_BUDGET", 10)
    approx = init.init_codebook(w, 8, "kmeans")

    def cost(c):
        return (w[:, :, None] - c[:, None, :]).pow(2).min(dim=2).values.sum()

    assert approx.shape == (2, 8) and (approx[:, 1:] > approx[:, :-1]).all()
    assert cost(exact) <= cost(approx) <= cost(exact) * 1.02  # Lloyd: a local optimum


@pytest.mark.parametrize("granularity", ["layer", "channel"])
def test_norse_recurrent_cell_raw_weights_are_wrapped(granularity):
    pytest.importorskip("norse")
    import norse.torch as nt

    model = nt.SequentialState(nn.Flatten(), nt.LIFRecurrentCell(64, 16), nn.Linear(16, 10))
    sf.wrap(model, m=4, bits=4, granularity=granularity)
    names = [c.name for c in sf.compressed_layers(model)]
    assert names == ["1.input_weights", "1.recurrent_weights", "2"]
    x = torch.rand(3, 1, 8, 8) * 3
    out = sf.run(model, x, num_steps=5)
    (out.sum() + sf.commitment_loss(model)).backward()
    for layer in sf.compressed_layers(model):
        assert layer.latent.grad is not None
        assert layer.quantizer.codebook.grad is not None
    _check_invariant(model, 4, 4)
    model.eval()
    before = sf.run(model, x, num_steps=5)
    sf.freeze(model)
    assert torch.equal(sf.run(model, x, num_steps=5), before)
    _check_invariant(model, 4, 4)
    sf.strip(model)
    assert not sf.is_wrapped(model)
    assert torch.equal(sf.run(model, x, num_steps=5), before)
    with pytest.raises(sf.SpikeFitValueError, match=r"include='1.nope'.*'1.recurrent_weights'"):
        sf.wrap(model, include="1.nope")


def test_commitment_loss_reuses_the_forward_assignment():
    model = sf.wrap(nn.Linear(10, 4), m=4)
    q = model.parametrizations.weight[0]
    calls = []
    orig = q.assign
    q.assign = lambda *a, **k: (calls.append(1), orig(*a, **k))[1]
    q.invalidate()
    loss = model(torch.randn(2, 10)).sum() + sf.commitment_loss(model)
    assert len(calls) == 1  # the forward's assignment, reused by the commitment term
    loss.backward()
    sf.commitment_loss(model)  # after backward the cache is gone: computed afresh, same value
    assert len(calls) == 2


# -- the per-forward cache sees every way of changing a weight ---------------------------------

def _eval_wrapped(bits=None, granularity="layer"):
    torch.manual_seed(0)
    model = sf.wrap(nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 4)), m=4, bits=bits,
                    granularity=granularity).eval()
    return model, torch.randn(5, 10)


def _fresh_output(model, x):
    """The output computed from scratch: every quantizer's cache dropped first."""
    for module in model.modules():
        if isinstance(module, (CodebookWeight, FrozenCodebook)):
            module.invalidate()
    with torch.no_grad():
        return model(x)


def _latent(model):
    return model[0].parametrizations.weight.original


def _vector_to_parameters(model):
    vec = torch.nn.utils.parameters_to_vector(model.parameters())
    torch.nn.utils.vector_to_parameters(vec * 1.7 + 0.05, model.parameters())


def _data_mul(model):
    _latent(model).data.mul_(-1.5)


def _data_assign(model):
    p = _latent(model)
    p.data = p.detach() * -1.5


def _load_state_dict(model):
    state = {k: v * -1.5 if k.endswith("original") else v for k, v in model.state_dict().items()}
    model.load_state_dict(state)


def _copy_no_grad(model):
    with torch.no_grad():
        _latent(model).copy_(_latent(model) * -1.5)


def _held_data_reference(model):
    held = _latent(model).data  # taken before the first forward, written after it
    return lambda: held.mul_(-1.5)


WRITES = {"vector_to_parameters": _vector_to_parameters, "p.data.mul_": _data_mul, "p.data = ...": _data_assign,
          "load_state_dict": _load_state_dict, "copy_ under no_grad": _copy_no_grad}


@pytest.mark.parametrize("bits", [None, 4])
@pytest.mark.parametrize("how", list(WRITES))
def test_cache_sees_every_way_of_changing_a_weight(how, bits):
    model, x = _eval_wrapped(bits)
    with torch.no_grad():
        before = model(x)
    WRITES[how](model)
    with torch.no_grad():
        after = model(x)
    assert not torch.equal(after, before)  # the write changed the model: the check is not vacuous
    assert torch.equal(after, _fresh_output(model, x))


def test_cache_sees_a_held_data_reference_written_later():
    model, x = _eval_wrapped()
    write = _held_data_reference(model)
    with torch.no_grad():
        before = model(x)
    write()
    with torch.no_grad():
        after = model(x)
    assert not torch.equal(after, before)
    assert torch.equal(after, _fresh_output(model, x))


def test_cache_sees_a_codebook_written_through_data():
    model, x = _eval_wrapped()
    with torch.no_grad():
        before = model(x)
    model[0].parametrizations.weight[0].codebook.data.mul_(2.0)
    with torch.no_grad():
        after = model(x)
    assert not torch.equal(after, before)
    assert torch.equal(after, _fresh_output(model, x))


@pytest.mark.parametrize("how", ["load_state_dict", "values.data.mul_"])
def test_frozen_cache_sees_changed_buffers(how):
    model, x = _eval_wrapped(bits=4)
    sf.freeze(model)
    with torch.no_grad():
        before = model(x)
    frozen = model[0].parametrizations.weight[0]
    if how == "load_state_dict":
        state = model.state_dict()
        key = next(k for k in state if k.endswith("0.parametrizations.weight.0.values"))
        state[key] = state[key] * 2.0
        model.load_state_dict(state)
    else:
        frozen.values.data.mul_(2.0)
    with torch.no_grad():
        after = model(x)
    assert not torch.equal(after, before)
    assert torch.equal(after, _fresh_output(model, x))


def test_eval_weight_computed_once_per_forward_pass_and_reused_until_a_write():
    model = sf.wrap(nn.Linear(10, 4), m=4).eval()
    q = model.parametrizations.weight[0]
    calls = []
    orig = q.assign
    q.assign = lambda *a, **k: (calls.append(1), orig(*a, **k))[1]
    q.invalidate()
    x = torch.randn(2, 10)
    with torch.no_grad():
        for _ in range(5):
            model(x)
    assert len(calls) == 1
    model.parametrizations.weight.original.data.mul_(0.5)
    with torch.no_grad():
        for _ in range(5):
            model(x)
    assert len(calls) == 2


@pytest.mark.parametrize("width", [30, 2100])  # below and above the size where the table search starts
@pytest.mark.parametrize("after_forward", [False, True])
@pytest.mark.parametrize("bits", [None, 4])
def test_commitment_value_and_gradient_match_autograd_through_the_gather(after_forward, bits, width):
    torch.manual_seed(3)
    model = sf.wrap(nn.Linear(width, 8), m=5, bits=bits, granularity="channel")
    q = model.parametrizations.weight[0]
    w = model.parametrizations.weight.original.detach()
    values = q.codebook_values()
    idx = q.assign(w, values)
    expected = (torch.gather(values, 1, idx) - w.reshape(q.groups, -1)).pow(2).mean()
    (want,) = torch.autograd.grad(expected, q.codebook)
    if after_forward:
        model(torch.randn(2, width))  # the commitment then reuses this forward's w_q
    got = sf.commitment_loss(model)
    got.backward()
    assert torch.allclose(got, expected, rtol=1e-6, atol=0)
    assert torch.allclose(q.codebook.grad, want, rtol=1e-5, atol=1e-9)
    assert model.parametrizations.weight.original.grad is None


@pytest.mark.parametrize("granularity", ["layer", "channel"])
@pytest.mark.parametrize("m,bits", [(4, None), (4, 4), (16, 8), (256, None)])
def test_invariant_on_a_layer_large_enough_for_the_table_search(granularity, m, bits):
    from snn_spikefit.quantize import assign

    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 4))
    assert model[0].weight.numel() >= assign.MIN_SIZE
    sf.wrap(model, m=m, bits=bits, granularity=granularity)
    x = torch.randn(16, 256)
    _steps_both_modes(model, x, torch.optim.Adam(model.parameters(), lr=1e-2), m, bits, lambda y: y.pow(2).mean())
    q = model[0].parametrizations.weight[0]
    w = model[0].parametrizations.weight.original.detach()
    values = q.codebook_values().detach()
    nearest = (w.reshape(q.groups, -1, 1) - values[:, None, :]).abs().argmin(dim=2)
    got = q.assign(w, values)
    same_value = torch.gather(values, 1, got) == torch.gather(values, 1, nearest)
    tie = (w.reshape(q.groups, -1) - torch.gather(values, 1, got)).abs() == \
        (w.reshape(q.groups, -1) - torch.gather(values, 1, nearest)).abs()
    assert bool((same_value | tie).all())  # the nearest codeword (either one on an exact tie)


@pytest.mark.parametrize("bits", [None, 4])
def test_large_layer_lookup_gives_the_plain_gather_values_and_gradients(bits):
    from snn_spikefit.quantize import assign

    torch.manual_seed(5)
    model = sf.wrap(nn.Sequential(nn.Linear(256, 128)), m=6, bits=bits, granularity="channel")
    q = model[0].parametrizations.weight[0]
    w = model[0].parametrizations.weight.original
    assert w.numel() >= assign.MIN_SIZE  # the custom autograd Function path is the one under test
    g = torch.randn(128, 256)
    (model[0].weight * g).sum().backward()
    got_w, got_c = w.grad.clone(), q.codebook.grad.clone()
    w.grad, q.codebook.grad = None, None
    values = q.codebook_values()
    idx = q.assign(w, values)
    plain = torch.gather(values, 1, idx).reshape(w.shape) + (w - w.detach())
    assert torch.equal(model[0].weight.detach(), plain.detach())
    (plain * g).sum().backward()
    assert torch.equal(got_w, w.grad)
    assert torch.allclose(got_c, q.codebook.grad, rtol=1e-5, atol=1e-6)
    assert got_c.abs().sum() > 0  # the codebook gets a gradient at all


def test_a_wrap_refused_after_registering_leaves_plain_parameters():
    net = nn.Sequential(nn.Linear(4, 3))
    weight, before = net[0].weight, net[0].weight.detach().clone()
    with pytest.raises(sf.SpikeFitValueError, match="no spiking neuron"):
        sf.wrap(net, m=3, state_bits=8)  # fails after the parametrizations are registered
    assert not parametrize.is_parametrized(net[0]) and net[0].weight is weight
    assert type(net[0].weight) is nn.Parameter and torch.equal(net[0].weight, before)
