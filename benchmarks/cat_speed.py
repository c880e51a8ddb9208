"""CAT training cost vs FP32 on a VGG-style conv SNN (benchmark, not a test).

Measures, in one run on the same machine:
  * training step time (run over T steps + backward + Adam step), median of
    interleaved repetitions, CAT / FP32, for m=4 and m=256;
  * peak memory: (a) bytes autograd saves for backward in one step,
    (b) peak resident memory growth during training, each run in a fresh
    subprocess; CAT / FP32.

Issue targets: time ratio <= 1.10 (m=4), <= 1.25 (m=256); memory ratio <= 1.2.

    python benchmarks/cat_speed.py            # 3x32x32, T=4, batch 32, 2 threads
    python benchmarks/cat_speed.py --quick    # fewer repetitions
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch


def build(config: str, seed: int = 0):
    import snn_spikefit as sf
    from snn_spikefit.zoo.snntorch import vgg_snn

    torch.manual_seed(seed)
    model = vgg_snn((64, "A", 128, "A", 256, 256, "A"), in_channels=3, image_size=32, num_classes=10)
    if config != "fp32":
        sf.wrap(model, m=int(config.split("=")[1]), bits=None if config.endswith("256") else 4)
    return model


def step_fn(model, x, y, num_steps):
    import snn_spikefit as sf

    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    wrapped = sf.is_wrapped(model)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(sf.run(model, x, num_steps=num_steps).mean(0), y)
        if wrapped:
            loss = loss + 0.25 * sf.commitment_loss(model)
        loss.backward()
        opt.step()

    return step


def saved_bytes(model, x, y, num_steps) -> int:
    import snn_spikefit as sf

    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = torch.nn.functional.cross_entropy(sf.run(model, x, num_steps=num_steps).mean(0), y)
        if sf.is_wrapped(model):
            loss = loss + 0.25 * sf.commitment_loss(model)
    loss.backward()
    return total


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def child(config: str, batch: int, num_steps: int, threads: int, steps: int) -> None:
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    model = build(config)
    x, y = torch.rand(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    before = rss_bytes()
    step = step_fn(model, x, y, num_steps)
    for _ in range(steps):
        step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"saved": saved_bytes(model, x, y, num_steps), "rss_growth": peak - before, "peak_rss": peak}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--num-steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=15, help="timed steps per configuration")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--keep-denormals", action="store_true",
                    help="do not flush denormal floats to zero (they can slow either model several-fold on CPU)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.batch, args.num_steps, args.threads, 3)
        return
    reps = 5 if args.quick else args.reps
    torch.set_num_threads(args.threads)
    flushed = torch.set_flush_denormal(not args.keep_denormals)
    configs = ["fp32", "m=4", "m=256"]
    x, y = torch.rand(args.batch, 3, 32, 32), torch.randint(0, 10, (args.batch,))
    steps = {c: step_fn(build(c), x, y, args.num_steps) for c in configs}
    for c in configs:  # warm-up
        steps[c]()
    times = {c: [] for c in configs}
    for _ in range(reps):  # interleaved, so drift hits every configuration alike
        for c in configs:
            t0 = time.perf_counter()
            steps[c]()
            times[c].append(time.perf_counter() - t0)
    med = {c: statistics.median(v) for c, v in times.items()}
    mem = {}
    for c in configs:
        out = subprocess.run([sys.executable, __file__, "--child", c, "--batch", str(args.batch),
                              "--num-steps", str(args.num_steps), "--threads", str(args.threads)],
                             capture_output=True, text=True, check=True)
        mem[c] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"VGG-style conv SNN, 3x32x32, T={args.num_steps}, batch {args.batch}, {args.threads} threads, "
          f"{reps} interleaved steps each, denormals flushed: {flushed and not args.keep_denormals}")
    print(f"{'config':8} {'step s':>8} {'time ratio':>11} {'saved MB':>9} {'saved ratio':>12} "
          f"{'RSS growth MB':>14} {'RSS ratio':>10} {'peak RSS ratio':>15}")
    for c in configs:
        print(f"{c:8} {med[c]:8.4f} {med[c] / med['fp32']:11.3f} {mem[c]['saved'] / 1e6:9.1f} "
              f"{mem[c]['saved'] / mem['fp32']['saved']:12.3f} {mem[c]['rss_growth'] / 1e6:14.1f} "
              f"{mem[c]['rss_growth'] / max(mem['fp32']['rss_growth'], 1):10.3f} "
              f"{mem[c]['peak_rss'] / mem['fp32']['peak_rss']:15.3f}")


if __name__ == "__main__":
    main()
