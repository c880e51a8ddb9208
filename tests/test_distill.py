"""Membrane-aware distillation: zero for a copy, gradient only to the student, the right membranes."""

import copy

import pytest
import torch
import torch.nn.functional as F

import snn_spikefit as sf
from snn_spikefit.train import scores

from conftest import needs_norse, needs_snntorch

pytestmark = needs_snntorch


def _teacher():
    from snn_spikefit.zoo.snntorch import conv_snn

    torch.manual_seed(0)
    net = conv_snn(image_size=8, channels=(6, 8))
    with torch.no_grad():
        net[0].weight.mul_(3)
    return net


def _x(n=4):
    return torch.rand(n, 1, 8, 8) * 2


def _hand_membranes(net, x, steps):
    """The membranes of each Leaky after every step, read straight off the neurons."""
    import snntorch as snn

    leaky = {n: m for n, m in net.named_modules() if isinstance(m, snn.Leaky)}
    for m in leaky.values():
        m.reset_mem()
    out = {n: [] for n in leaky}
    with torch.no_grad():
        for _ in range(steps):
            net(x)
            for n, m in leaky.items():
                out[n].append(m.mem.clone())
    return {n: torch.stack(v) for n, v in out.items()}


def test_loss_is_zero_for_a_copy_and_positive_for_a_compressed_student():
    teacher = _teacher()
    x = _x()
    d = sf.Distiller(teacher, copy.deepcopy(teacher), membrane_weight=1.0, logit_weight=1.0)
    d.run(x, num_steps=4)
    s_mem, t_mem = d.membranes()
    assert all(bool(v.abs().sum() > 0) for v in t_mem.values())  # not vacuous: the membranes move
    assert float(d.loss()) == 0.0
    student = sf.wrap(copy.deepcopy(teacher), m=2, bits=4)
    d2 = sf.Distiller(teacher, student)
    d2.run(x, num_steps=4)
    assert float(d2.loss()) > 0 and d2.terms["membrane"] > 0


def test_gradient_reaches_only_the_student():
    teacher = _teacher()
    student = sf.wrap(copy.deepcopy(teacher), m=3, bits=4)
    before = copy.deepcopy(teacher.state_dict())
    d = sf.Distiller(teacher, student, temperature=2.0)
    out = d.run(_x(), num_steps=4)
    (F.cross_entropy(scores(out), torch.tensor([0, 1, 2, 3])) + d.loss()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    grads = [p.grad for p in student.parameters() if p.requires_grad]
    assert grads and any(g is not None and bool(g.abs().sum() > 0) for g in grads)
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k])


def test_membranes_come_from_the_right_layers():
    teacher = _teacher()
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        student[3].weight.mul_(0.5)  # the second layer differs: only its membranes may differ
    x = _x()
    d = sf.Distiller(teacher, student)
    d.run(x, num_steps=5)
    s_mem, t_mem = d.membranes()
    hand_t, hand_s = _hand_membranes(teacher, x, 5), _hand_membranes(student, x, 5)
    assert set(s_mem) == set(hand_s) == {"2", "5"}
    for name in ("2", "5"):
        assert torch.equal(s_mem[name].detach(), hand_s[name])
        assert torch.equal(t_mem[name], hand_t[name])
    assert torch.equal(s_mem["2"], t_mem["2"]) and not torch.equal(s_mem["5"], t_mem["5"])


def test_explicit_layer_map_and_shape_refusal():
    teacher = _teacher()
    d = sf.Distiller(teacher, copy.deepcopy(teacher), layers={"2": "5"}, logit_weight=0.0)
    d.run(_x(), num_steps=2)
    with pytest.raises(sf.SpikeFitValueError, match="differ in shape"):
        d.loss()
    with pytest.raises(sf.SpikeFitValueError, match="names no teacher neuron"):
        sf.Distiller(teacher, copy.deepcopy(teacher), layers={"2": "nope"})
    with pytest.raises(sf.SpikeFitValueError, match="same module"):
        sf.Distiller(teacher, teacher)
    with pytest.raises(sf.SpikeFitValueError, match="call distiller.run"):
        sf.Distiller(teacher, copy.deepcopy(teacher), membrane_weight=0.0).loss()


def test_pruned_student_maps_to_the_kept_channels():
    teacher = _teacher()
    student = copy.deepcopy(teacher)
    data = [(_x(8), torch.arange(8) % 10)]
    report = sf.prune(student, data, amount=0.5, criterion="l1", num_steps=2, progress=False)
    assert student[0].out_channels == 3
    with pytest.raises(sf.SpikeFitValueError, match="prune_report"):
        d = sf.Distiller(teacher, student, layers=["2"], logit_weight=0.0)
        d.run(_x(), num_steps=3)
        d.loss()
    d = sf.Distiller(teacher, student, layers=["2"], logit_weight=0.0, prune_report=report)
    d.run(_x(), num_steps=3)
    s_mem, t_mem = d.membranes()
    kept = torch.tensor(report.layers[0].kept)
    assert bool(t_mem["2"].abs().sum() > 0)
    # the first layer keeps the teacher's filters: its membranes are the teacher's kept channels exactly
    assert torch.equal(s_mem["2"].detach(), t_mem["2"][:, :, kept])
    assert float(d.loss()) == 0.0


def test_fit_with_teacher_trains_only_the_student():
    teacher = _teacher()
    student = sf.wrap(copy.deepcopy(teacher), m=3, bits=4)
    before = copy.deepcopy(teacher.state_dict())
    latent = student[0].parametrizations.weight.original.detach().clone()
    data = [(_x(8), torch.arange(8) % 10)] * 2
    history = sf.fit(student, data, epochs=1, num_steps=2, teacher=teacher,
                     distill={"membrane_weight": 0.5, "temperature": 2.0}, progress=False)
    assert len(history) == 1 and torch.isfinite(torch.tensor(history)).all()
    assert not torch.equal(student[0].parametrizations.weight.original, latent)
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k])
    assert not any(m._forward_hooks for m in student.modules())  # fit closed the distiller
    with pytest.raises(sf.SpikeFitValueError, match="teacher="):
        sf.fit(student, data, distill={"membrane_weight": 1.0}, progress=False)


@needs_norse
def test_norse_student_copy_is_zero_and_cross_framework_runs():
    from snn_spikefit.zoo.norse import dense_snn
    from snn_spikefit.zoo.snntorch import dense_snn as st_dense

    torch.manual_seed(0)
    teacher = dense_snn(64, 10, hidden=(12,), threshold=0.3)
    x = torch.rand(4, 1, 8, 8) * 2
    d = sf.Distiller(teacher, copy.deepcopy(teacher))
    d.run(x, num_steps=4)
    assert bool(d.membranes()[1]["2"].abs().sum() > 0) and float(d.loss()) == 0.0
    student = st_dense(64, 10, hidden=(12,))
    d = sf.Distiller(teacher, student)
    d.run(x, num_steps=4)
    loss = d.loss()
    loss.backward()
    assert torch.isfinite(loss) and float(loss) > 0
    assert all(p.grad is None for p in teacher.parameters())


def _bn_teacher():
    from snn_spikefit.zoo.snntorch import conv_snn

    torch.manual_seed(0)
    net = conv_snn(image_size=8, channels=(6, 8), batch_norm=True)
    with torch.no_grad():
        net[0].weight.mul_(3)
        for bn in (net[1], net[5]):  # running statistics unlike any batch's: eval and train modes differ
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    return net


def test_batchnorm_teacher_matches_a_training_student_and_keeps_its_statistics():
    teacher = _bn_teacher()
    before = copy.deepcopy(teacher.state_dict())
    teacher.eval()
    student = copy.deepcopy(teacher).train()
    d = sf.Distiller(teacher, student)  # teacher_bn="match": batch statistics while the student trains
    d.run(_x(), num_steps=4)
    assert all(bool(v.abs().sum() > 0) for v in d.membranes()[1].values())
    assert float(d.loss()) == 0.0
    for k, v in teacher.state_dict().items():  # running statistics neither used nor updated
        assert torch.equal(v, before[k]), k
    assert not teacher.training and all(m.track_running_stats for m in (teacher[1], teacher[5]))
    old = sf.Distiller(teacher, student, teacher_bn="running")  # the teacher's running statistics
    old.run(_x(), num_steps=4)
    assert old.loss().item() > 0 and old.terms["membrane"] > 0
    student.eval()  # an evaluating student: the teacher uses its running statistics as well
    with torch.no_grad():
        out = d.run(_x(), num_steps=4)
    t_out = d._outputs[0]
    assert torch.equal(out, t_out)


def test_variance_normalised_membrane_loss_is_mse_over_teacher_variance():
    teacher = _teacher()
    student = sf.wrap(copy.deepcopy(teacher), m=2, bits=4)
    d = sf.Distiller(teacher, student, normalize="variance", membrane_weight=1.0, logit_weight=0.0)
    d.run(_x(), num_steps=4)
    s_mem, t_mem = d.membranes()
    hand = torch.stack([F.mse_loss(s_mem[n], t_mem[n]) / (t_mem[n].var(unbiased=False) + 1e-6)
                        for n in ("2", "5")]).mean()
    assert torch.allclose(d.loss(), hand)
    plain = sf.Distiller(teacher, student, membrane_weight=1.0, logit_weight=0.0)  # unnormalised: the plain mean of the MSEs
    plain.run(_x(), num_steps=4)
    s_mem, t_mem = plain.membranes()
    assert torch.allclose(plain.loss(), torch.stack([F.mse_loss(s_mem[n], t_mem[n]) for n in ("2", "5")]).mean())


def test_distiller_refuses_unknown_options_by_name():
    teacher = _teacher()
    with pytest.raises(sf.SpikeFitValueError, match=r"normalize='std' is not allowed; use None or 'variance'"):
        sf.Distiller(teacher, copy.deepcopy(teacher), normalize="std")
    with pytest.raises(sf.SpikeFitValueError, match=r"teacher_bn='eval' is not allowed; use 'match' or 'running'"):
        sf.Distiller(teacher, copy.deepcopy(teacher), teacher_bn="eval")


def test_folded_student_is_matched_to_the_teachers_running_statistics():
    from snn_spikefit.quantize.fold import fold_batchnorm

    teacher = _bn_teacher().eval()
    student = fold_batchnorm(copy.deepcopy(teacher)).train()  # no BatchNorm left: fixed statistics
    d = sf.Distiller(teacher, student, membrane_weight=1.0)
    d.run(_x(), num_steps=4)
    s_mem, t_mem = d.membranes()
    assert all(bool(v.abs().sum() > 0) for v in t_mem.values())
    assert float(d.loss()) < 1e-8  # the same function up to the rounding of folding
    d.close()
