"""The framework boundary holds: the core runs the whole pipeline with snnTorch, Norse, SpikingJelly and
the built-in adapters made unimportable, on a plain-torch neuron registered through its own adapter
(tests/tiny_lif.py); a third-party adapter found by entry point reaches import_nir and the CLI."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

TESTS = Path(__file__).resolve().parent

# Runs in a fresh interpreter: the finder is installed before anything of snn_spikefit is imported.
BOUNDARY = r'''
import importlib.abc, io, json, sys, warnings
from contextlib import redirect_stdout

REFUSED = ("snntorch", "norse", "spikingjelly", "snn_spikefit.adapters")


class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == r or name.startswith(r + ".") for r in REFUSED):
            raise ModuleNotFoundError(f"No module named {name!r} (refused by the boundary test)", name=name)
        return None


sys.meta_path.insert(0, Refuse())
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import torch
    from torch import nn

    import snn_spikefit as sf
    from snn_spikefit.adapter import nir_frameworks
    from snn_spikefit.cli import main
    from snn_spikefit.trace import Recorder
    from tiny_lif import TinyAdapter, TinyLIF

    assert sf.list_adapters() == [], sf.list_adapters()  # no built-in adapter without snn_spikefit.adapters
    sf.register_adapter(TinyAdapter())
    assert nir_frameworks() == ["tiny"], nir_frameworks()

    T = 6
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 12), TinyLIF(torch.linspace(0.5, 0.9, 12), 0.6),
                          nn.Linear(12, 4), TinyLIF(0.8, 0.3))
    with torch.no_grad():
        model[0].weight.mul_(2.0)
        model[2].weight.mul_(2.0)
    data = [(torch.rand(16, 8), torch.randint(0, 4, (16,))) for _ in range(4)]
    x = data[0][0]
    assert sf.get_adapter(model).name == "tiny"

    def spikes(net):
        with Recorder(net) as rec:
            out = sf.run(net, x, num_steps=T)
        return out.detach(), {k: v.detach() for k, v in rec.spikes.items()}

    def active(rec):  # every layer fires, none always
        rates = {k: float(v.mean()) for k, v in rec.items()}
        assert set(rates) == {"1", "3"} and all(0.0 < r < 1.0 for r in rates.values()), rates

    sf.wrap(model, m=4, bits=4)                                        # wrap
    out, rec = spikes(model)                                           # run
    assert out.shape == (T, 16, 4)
    active(rec)

    report = sf.prune(model, data, amount=0.25, num_steps=T, progress=False)  # prune
    assert model[0].out_features == 9 and model[2].in_features == 9, report
    assert tuple(model[1].beta.shape) == (9,)
    active(spikes(model)[1])

    sf.freeze(model)                                                   # freeze
    for layer in sf.compressed_layers(model):
        assert layer.frozen and layer.weight.unique().numel() <= 4, layer.name

    deploy = sf.evaluate(model, data, num_steps=T, progress=False)     # evaluate
    assert deploy.samples == 64 and 0.0 <= deploy.accuracy <= 100.0
    assert 0.0 < deploy.acs and {n.name for n in deploy.neurons} == {"1", "3"}

    chip = sf.HardwareProfile("tiny-chip", distinct_weights_per_neuron=4, weight_bits=4, neuron_models=("IF",))
    checked = sf.check(model, chip, sample=x[:1])                      # check
    assert isinstance(checked, sf.CheckReport) and not checked.ok
    assert [(v.rule, v.layer, v.actual) for v in checked.violations] == [
        ("neuron_model", "1", "LIF"), ("neuron_model", "3", "LIF")], checked.violations
    assert checked.violations[0].hint == "tiny-chip runs ['IF'] neurons (a TinyLIF with beta=1 never leaks)"

    before, before_rec = spikes(model)
    graph = sf.export_nir(model, x[:1], "tiny.nir")                    # export_nir
    assert graph.metadata["spikefit.framework"] == "tiny" and graph.metadata["spikefit.dt"] == 1e-3
    again = sf.import_nir("tiny.nir")                                  # import_nir (default: the only NIR framework)
    assert type(again) is nn.Sequential and isinstance(again[1], TinyLIF), again
    after, after_rec = spikes(again)
    assert torch.equal(before, after)
    assert before_rec.keys() == after_rec.keys() and all(torch.equal(before_rec[k], after_rec[k]) for k in before_rec)
    assert all(layer.frozen for layer in sf.compressed_layers(again))

    with redirect_stdout(io.StringIO()) as cli_out:                    # the CLI, on the third framework
        rc = main(["check", "tiny.nir", "--framework", "tiny", "--hardware", "loihi", "--json"])
    assert rc in (0, 1) and "violations" in json.loads(cli_out.getvalue())

leaked = sorted(m for m in sys.modules if any(m == r or m.startswith(r + ".") for r in REFUSED))
assert not leaked, leaked
noisy = [str(w.message) for w in caught if "adapter" in str(w.message)]
assert not noisy, noisy
print("BOUNDARY OK")
'''

# A third-party adapter found through the entry-point group, with frameworks installed or not.
PLUGIN = r'''
import argparse, sys
import torch
from torch import nn

import snn_spikefit as sf
from snn_spikefit.adapter import nir_frameworks
from snn_spikefit.cli import build_parser
from tiny_lif import TinyLIF

names = nir_frameworks()
assert "tiny" in sf.list_adapters() and names[-1] == "tiny", names
args = build_parser().parse_args(["export", "m.nir", "--framework", "tiny", "--out", "o.nir"])
assert args.framework == "tiny"
try:
    build_parser().parse_args(["export", "m.nir", "--framework", "keras", "--out", "o.nir"])
    raise AssertionError("--framework keras was accepted")
except SystemExit as exc:
    assert exc.code == 2
net = nn.Sequential(nn.Linear(3, 2), TinyLIF(0.5, 0.1))
back = sf.import_nir(sf.export_nir(net, torch.rand(1, 3)), framework="tiny")
assert isinstance(back[1], TinyLIF) and torch.equal(back[0].weight, net[0].weight)
try:
    sf.import_nir(sf.export_nir(net, torch.rand(1, 3)), framework="keras")
    raise AssertionError("framework='keras' was accepted")
except sf.SpikeFitValueError as exc:
    assert f"use one of {names}" in str(exc), exc
print("PLUGIN OK", names)
'''


def _python(script: str, cwd: Path, extra_path: list[Path]) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(p) for p in extra_path] + [env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_core_runs_the_pipeline_without_any_framework_or_builtin_adapter(tmp_path):
    done = _python(BOUNDARY, tmp_path, [TESTS])
    assert done.returncode == 0, done.stderr[-4000:]
    assert "BOUNDARY OK" in done.stdout


def test_entry_point_adapter_appears_in_import_nir_and_cli_choices(tmp_path):
    dist = tmp_path / "tiny_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[snn_spikefit.adapters]\ntiny = tiny_lif:TinyAdapter\n")
    done = _python(PLUGIN, tmp_path, [tmp_path, TESTS])
    assert done.returncode == 0, done.stderr[-4000:]
    assert "PLUGIN OK" in done.stdout


def test_the_refusing_finder_really_refuses(tmp_path):
    """Guard against a vacuous boundary test: the same finder makes the built-in adapters unimportable."""
    script = BOUNDARY.split("warnings.simplefilter")[0] + textwrap.dedent('''
        for name in REFUSED:
            try:
                __import__(name)
            except ModuleNotFoundError as exc:
                print("refused", exc.name)
        ''')
    done = _python(script, tmp_path, [TESTS])
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.split() == ["refused", "snntorch", "refused", "norse", "refused", "spikingjelly",
                                  "refused", "snn_spikefit.adapters"]
    assert json.dumps(done.stdout)  # plain text, no traceback
