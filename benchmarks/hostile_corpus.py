"""Counts for issue 12: every hostile input of the test corpus, tried once; how many fail safely.

    python benchmarks/hostile_corpus.py [--fuzz N]

Builds the generated corpus of tests/ (hostile_files.py: .nir files, imported one after the other
in a fresh interpreter with their peak-memory growth; hostile_api.py: API and CLI calls, in this
process) and prints: inputs tried, named errors (a ``SpikeFitError``, or for the CLI exit code 2
with one line on stderr), the expected class and phrase, models untouched (state_dict bytes and
module structure, for the cases that hold a model), and the largest peak-memory growth of a file
case. ``--fuzz N`` adds N hypothesis-mutated files (tests/fuzz_nir.py). Exit code 1 if any input
fails unsafely.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))


def _state(model):
    if model is None:
        return None
    return ({k: v.detach().cpu().numpy().tobytes() for k, v in model.state_dict().items()},
            [(n, type(m).__name__) for n, m in model.named_modules()])


def api_counts(tmp: Path) -> dict:
    import hostile_api

    import snn_spikefit as sf

    tried = named = expected = with_model = untouched = 0
    bad = []
    for i, case in enumerate(hostile_api.CASES):
        d = tmp / f"api{i}"
        d.mkdir()
        model, action = case.make(d)
        before = _state(model)
        tried += 1
        try:
            action()
            bad.append(f"{case.id}: no error")
            continue
        except BaseException as exc:  # noqa: BLE001
            cli_ok = isinstance(exc, hostile_api.CLIFailure) and exc.code == 2 and \
                len(exc.stderr.strip().splitlines()) == 1 and "Traceback" not in exc.stderr
            is_named = isinstance(exc, sf.SpikeFitError) or cli_ok or case.error is ValueError
            named += is_named
            ok = isinstance(exc, case.error) and case.phrase in str(exc)
            expected += ok
            if not (is_named and ok):
                bad.append(f"{case.id}: {type(exc).__name__}: {exc}"[:300])
        if model is not None:
            with_model += 1
            same = _state(model) == before
            untouched += same
            if not same:
                bad.append(f"{case.id}: model changed")
    return dict(tried=tried, named=named, expected=expected, with_model=with_model, untouched=untouched, bad=bad)


def file_counts(tmp: Path) -> dict:
    import hostile_files

    files = hostile_files.make_files(tmp / "files")
    jobs = [{"id": k, "path": str(p), "max_bytes": hostile_files.FILE_CASES[k][3]} for k, p in files.items()]
    jobs += hostile_files.cli_file_jobs(files, tmp)
    (tmp / "jobs.json").write_text(json.dumps(jobs))
    proc = subprocess.run([sys.executable, str(TESTS / "hostile_files.py"), str(tmp / "jobs.json")],
                          capture_output=True, text=True, timeout=900, check=True)
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    bad, expected = [], 0
    for r in results:
        if "exit" in r:  # a CLI run on a corpus file
            ok = hostile_files.cli_result_ok(r) and not Path(tmp / "cli_out.nir").exists()
            r["named"] = ok
        else:
            _, error, phrase, _ = hostile_files.FILE_CASES[r["id"]]
            ok = bool(r.get("named")) and (r["error"] == error or error == "SpikeFitError") and phrase in r["message"]
        expected += ok
        if not ok:
            bad.append(f"{r['id']}: {r.get('error')}: {r.get('message') or r.get('stderr')}"[:300])
    return dict(tried=len(results), named=sum(bool(r.get("named")) for r in results), expected=expected,
                peak_growth_mib=max(r["peak_growth_mib"] for r in results), bad=bad)


def fuzz_counts(tmp: Path, n: int) -> dict:
    proc = subprocess.run([sys.executable, str(TESTS / "fuzz_nir.py"), str(tmp), str(n)], capture_output=True,
                          text=True, timeout=3600, check=True)
    return json.loads(proc.stdout.splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fuzz", type=int, default=0, metavar="N", help="also fuzz N mutated files")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = file_counts(tmp)
        api = api_counts(tmp)
        (tmp / "fuzz").mkdir()
        fuzz = fuzz_counts(tmp / "fuzz", args.fuzz) if args.fuzz else None
    tried = files["tried"] + api["tried"]
    named = files["named"] + api["named"]
    expected = files["expected"] + api["expected"]
    print(f"hostile corpus: {tried} inputs tried ({files['tried']} .nir files, API import or CLI, in a fresh "
          f"interpreter; {api['tried']} API/CLI calls)")
    print(f"  named errors (SpikeFitError / CLI exit 2, one line): {named} of {tried}")
    print(f"  expected class and phrase:                          {expected} of {tried}")
    print(f"  models untouched (state_dict + structure):          {api['untouched']} of {api['with_model']}")
    print(f"  largest peak-memory growth of a file case:          {files['peak_growth_mib']:.1f} MiB")
    if fuzz is not None:
        print(f"fuzz: {fuzz['examples']} mutated files: {fuzz['named']} named refusals, {fuzz['imported']} imported, "
              f"{len(fuzz['other'])} other exceptions, peak-memory growth {fuzz['peak_growth_mib']:.1f} MiB")
    for line in files["bad"] + api["bad"] + (fuzz["other"] if fuzz else []):
        print("  UNSAFE:", line)
    unsafe = files["bad"] or api["bad"] or (fuzz and fuzz["other"])
    return 1 if unsafe else 0


if __name__ == "__main__":
    sys.exit(main())
