import importlib.util
import sys
from pathlib import Path

import pytest
import torch

# benchmarks/ holds scripts, not an installed package: test_bench imports it from the repository root,
# whether pytest runs as `python -m pytest` (root on sys.path) or as `pytest` (it is not).
ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.append(ROOT)

HAS_SNNTORCH = importlib.util.find_spec("snntorch") is not None
HAS_NORSE = importlib.util.find_spec("norse") is not None

needs_snntorch = pytest.mark.skipif(not HAS_SNNTORCH, reason="snntorch is not installed")
needs_norse = pytest.mark.skipif(not HAS_NORSE, reason="norse is not installed")


# The suite's models are tiny: one thread is several times faster than two
# fighting over a shared 2-core machine (measured: 60 steps 0.2 s vs 5.7 s).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
