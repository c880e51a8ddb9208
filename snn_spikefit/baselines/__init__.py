"""The baselines SpikeFit is compared with (REFERENCE section 5).

* :func:`ttq`: Trained Ternary Quantization (three values per layer, learned scales).
* :func:`qat`, :func:`cluster`: the clustered baseline (QAT, scikit-learn k-means /
  mini-batch k-means / uniform centroids on the INT8 grid, centroid fine-tune);
  :func:`relu_twin`, :func:`convert_to_snn`: its ANN -> SNN conversion path.
* :func:`qpsnn`: QP-SNN-style uniform ``b``-bit weights with ReScaW.
* :func:`freeze_baseline`: store any of them as integer codes + codebook.

The suite that runs them against CAT is ``python benchmarks/suite.py``.
"""

from .clustering import CLUSTER_METHODS, ClusterWeight, FakeQuantWeight, cluster, cluster_values, qat, strip_qat
from .conversion import activation_scales, convert_to_snn, relu_twin
from .freeze import BASELINE_PARAMETRIZATIONS, freeze_baseline
from .qpsnn import UniformWeight, qpsnn, rescaw
from .ttq import TernaryFunction, TernaryWeight, ternary_layers, ttq

__all__ = [
    "ttq", "TernaryWeight", "TernaryFunction", "ternary_layers",
    "qat", "strip_qat", "cluster", "cluster_values", "ClusterWeight", "FakeQuantWeight", "CLUSTER_METHODS",
    "relu_twin", "convert_to_snn", "activation_scales",
    "qpsnn", "UniformWeight", "rescaw",
    "freeze_baseline", "BASELINE_PARAMETRIZATIONS",
]
