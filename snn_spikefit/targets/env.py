"""A target's own Python environment, found or created in a cache folder.

Lava (lava-nc 0.10) needs Python < 3.11 and numpy < 2, so it cannot share the environment that runs
torch. :func:`target_python` returns the interpreter of a virtual environment in
``$SPIKEFIT_TARGETS_HOME/<name>`` (default ``$XDG_CACHE_HOME/snn_spikefit/targets/<name>``, i.e.
``~/.cache/snn_spikefit/targets/<name>``), creating it with the first Python of the wanted version
it finds (``$SPIKEFIT_PYTHON310`` for Lava, ``python3.10`` on PATH, pyenv's
``$(pyenv root)/versions/3.10.*``) and pip-installing the pinned packages, saying what it does on
stderr. A stamp file records what was installed; a different pin set rebuilds it.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from . import TargetError

__all__ = ["targets_home", "find_python", "target_python", "target_site", "run_worker"]


def targets_home() -> Path:
    if os.environ.get("SPIKEFIT_TARGETS_HOME"):
        return Path(os.environ["SPIKEFIT_TARGETS_HOME"])
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "snn_spikefit" / "targets"


def _version_of(python: str) -> str | None:
    try:
        out = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def find_python(version: str, env_var: str) -> str | None:
    """The first interpreter of ``version`` (e.g. ``"3.10"``): ``$env_var``, PATH, pyenv."""
    candidates = [os.environ.get(env_var), shutil.which(f"python{version}")]
    roots = [os.environ.get("PYENV_ROOT"), os.path.join(os.path.expanduser("~"), ".pyenv")]
    pyenv = shutil.which("pyenv")
    if pyenv:
        try:
            roots.insert(0, subprocess.run([pyenv, "root"], capture_output=True, text=True,
                                           timeout=30).stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass
    for root in filter(None, roots):
        candidates += sorted(glob.glob(os.path.join(root, "versions", f"{version}.*", "bin", "python")), reverse=True)
    for python in filter(None, candidates):
        if _version_of(python) == version:
            return python
    return None


def _log(text: str) -> None:
    print(f"spikefit targets: {text}", file=sys.stderr, flush=True)


def target_python(name: str, *, version: str, packages: list[str], env_var: str, create: bool = True) -> str:
    """The interpreter of target ``name``'s environment, created (once) when ``create``."""
    home = targets_home() / name
    python = home / "bin" / "python"
    stamp = home / "spikefit-installed.json"
    want = {"python": version, "packages": packages}
    if python.exists() and stamp.exists() and json.loads(stamp.read_text()) == want:
        return str(python)
    if not create:
        raise TargetError(f"the {name} environment {str(home)!r} does not exist or is out of date; "
                          f"`spikefit verify` creates it")
    base = find_python(version, env_var)
    if base is None:
        raise TargetError(f"target {name!r} needs Python {version} (set ${env_var}, put python{version} on PATH, "
                          f"or `pyenv install {version}`); none was found")
    _log(f"creating {str(home)!r} with {base} (Python {version}) and installing {' '.join(packages)}")
    if home.exists():
        shutil.rmtree(home)
    home.parent.mkdir(parents=True, exist_ok=True)
    for cmd in ([base, "-m", "venv", str(home)], [str(python), "-m", "pip", "install", "-q", *packages]):
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            tail = " ".join((done.stderr or done.stdout).split()[-60:])
            raise TargetError(f"setting up the {name} environment failed at `{' '.join(cmd)}`: {tail}")
    stamp.write_text(json.dumps(want))
    _log(f"{name} environment ready: {python}")
    return str(python)


def target_site(name: str, *, packages: list[str], create: bool = True) -> str:
    """A folder of ``packages`` installed with ``pip --no-deps --target`` for this interpreter (created once).

    For a toolchain whose pins would break our environment but whose code runs beside it (sinabs
    pins ``nir<=1.0.4`` and imports fine with nir 1.0.8): put the folder on ``PYTHONPATH`` of a
    worker process; our own environment is never changed.
    """
    home = targets_home() / name
    stamp = home / "spikefit-installed.json"
    want = {"python": "%d.%d" % sys.version_info[:2], "packages": packages, "no_deps": True}
    if stamp.exists() and json.loads(stamp.read_text()) == want:
        return str(home)
    if not create:
        raise TargetError(f"the {name} packages {str(home)!r} do not exist or are out of date; "
                          f"`spikefit verify` installs them")
    _log(f"installing {' '.join(packages)} (--no-deps) into {str(home)!r}")
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(home), *packages]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = " ".join((done.stderr or done.stdout).split()[-60:])
        raise TargetError(f"installing the {name} packages failed at `{' '.join(cmd)}`: {tail}")
    stamp.write_text(json.dumps(want))
    return str(home)


def run_worker(cmd: list[str], worker: Path, arrays: dict, *, what: str, timeout_s: float,
               env: dict | None = None, hint: str = "") -> dict:
    """Run ``cmd + [worker, IN.npz, OUT.npz]`` on ``arrays`` written to ``IN.npz``; ``OUT.npz``'s arrays.

    A timeout or a non-zero exit is a :class:`TargetError` naming ``what`` (and ``hint`` after a
    timeout) with the last lines of the worker's output.
    """
    with tempfile.TemporaryDirectory(prefix=f"spikefit-{what}-") as tmp:
        src, dst = os.path.join(tmp, "in.npz"), os.path.join(tmp, "out.npz")
        np.savez(src, **arrays)
        try:
            done = subprocess.run([*cmd, str(worker), src, dst], capture_output=True, text=True,
                                  timeout=timeout_s, env=env)
        except subprocess.TimeoutExpired:
            raise TargetError(f"{what} did not finish within {timeout_s} s{hint}") from None
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
            raise TargetError(f"the {what} run failed (exit {done.returncode}):\n{tail}")
        with np.load(dst, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
