"""Compress a model trained elsewhere: NIR file -> import -> wrap -> fine-tune -> export.

    python examples/compress_nir_model.py                       # into snnTorch
    python examples/compress_nir_model.py --framework norse     # into Norse
    python examples/compress_nir_model.py --nir my_model.nir --input-shape 1 8 8

Without ``--nir``, the script first makes the "model trained elsewhere": a dense
Norse SNN trained on scikit-learn digits and written to a ``.nir`` file. Then,
as a user would: ``import_nir`` into the chosen framework, check its accuracy,
``wrap(m=4, bits=4)``, fine-tune with the commitment loss, ``freeze``, and
``export_nir`` the compressed model (integer codes and codebooks in the node
metadata). Finally the exported file is imported again and must give the same
spikes at every step and at most ``m`` distinct weights per layer.
Prints a table; writes ``examples/results/compress_nir_model_<framework>.json``.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import torch

import snn_spikefit as sf
from snn_spikefit.data.datasets import digits, make_loader
from snn_spikefit.table import Table
from snn_spikefit.trace import Recorder


def train_elsewhere(path: Path, epochs: int, steps: int) -> None:
    """Stand-in for a model from another lab: a Norse SNN trained on digits, saved as NIR."""
    from snn_spikefit.zoo.norse import dense_snn

    torch.manual_seed(0)
    model = dense_snn(64, 10, hidden=(64,), beta=0.5)
    train, _ = digits()
    sf.fit(model, make_loader(train, 64, shuffle=True), epochs=epochs, num_steps=steps, lr=1e-2, desc="elsewhere")
    sf.export_nir(model, train.tensors[0][:1], path)


def spikes_of(model, x, steps):
    with Recorder(model) as rec:
        sf.run(model, x, num_steps=steps)
    return list(rec.spikes.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nir", type=Path, help="a .nir file to compress (default: make one, see above)")
    ap.add_argument("--framework", default="snntorch", choices=["snntorch", "norse"])
    ap.add_argument("--m", type=int, default=4)
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=3, help="training epochs of the stand-in model")
    ap.add_argument("--finetune-epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="spikefit_nir_"))
    source = args.nir or work / "trained_elsewhere.nir"
    if args.nir is None:
        train_elsewhere(source, args.epochs, args.steps)

    train, test = digits()
    train_loader, test_loader = make_loader(train, 64, shuffle=True), make_loader(test, 256)
    model = sf.import_nir(source, args.framework)
    acc_imported = sf.accuracy(model, test_loader, num_steps=args.steps)

    sf.wrap(model, m=args.m, bits=args.bits)
    acc_wrapped = sf.accuracy(model, test_loader, num_steps=args.steps)
    sf.fit(model, train_loader, epochs=args.finetune_epochs, num_steps=args.steps, lr=2e-3, desc="fine-tune")
    sf.freeze(model)
    acc_frozen = sf.accuracy(model, test_loader, num_steps=args.steps)

    target = work / f"compressed_{args.framework}.nir"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a subtract reset would warn here; this model resets to v_reset
        sf.export_nir(model, test.tensors[0][:1], target)
    again = sf.import_nir(target, args.framework)
    x = test.tensors[0][:64]
    same = all(torch.equal(a, b) for a, b in zip(spikes_of(model, x, 50), spikes_of(again, x, 50)))
    unique = [int(c.module.weight.unique().numel()) for c in sf.compressed_layers(again)]

    table = Table(["stage", "accuracy %", "layers with codebook", "max unique weights"],
                  title=f"{source.name} -> {args.framework}, m={args.m}, bits={args.bits}, T={args.steps}")
    table.add_row(["imported (FP32)", acc_imported, 0, None])
    table.add_row(["wrapped, before fine-tuning", acc_wrapped, len(unique), max(unique)])
    table.add_row([f"fine-tuned {args.finetune_epochs} epochs, frozen", acc_frozen, len(unique), max(unique)])
    print(table)
    print(f"exported {target} and re-imported it: same spikes over 50 steps: {same}; "
          f"unique weights per layer: {unique}")
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_json(args.out / f"compress_nir_model_{args.framework}.json")
    if not same or max(unique) > args.m:
        raise SystemExit("round trip of the compressed model is not exact")


if __name__ == "__main__":
    main()
