"""snn_spikefit: make spiking neural networks fit neuromorphic chips.

Learnable codebooks on weights (CAT), structured pruning, deployment metrics,
hardware checks and NIR export for snnTorch, Norse and NIR models.

>>> import snn_spikefit as sf
>>> sf.__version__ >= "0.1"
True
"""

from __future__ import annotations

from .adapter import Adapter, get_adapter, list_adapters, register_adapter
from .quantize.codebook import CodebookWeight, FrozenCodebook
from .errors import (
    InputMismatchError,
    NotWrappedError,
    SpikeFitError,
    SpikeFitTypeError,
    SpikeFitValueError,
    UnsupportedLayerError,
)
from .runtime import RunRecord, record, release_state, reset, run
from .progress import get_progress, set_progress
from .table import Table
from .train import accuracy, fit, predict, recalibrate_bn
# pruning (FSC and the criteria it is compared with)
from .pruning.importance import CRITERIA, register_criterion
from .pruning.prune import PruneReport, prune
from .quantize.layers import compressed_layers, is_wrapped
from .quantize.bias import round_biases
from .quantize.wrap import codebook_summary, commitment_loss, freeze, strip, wrap
from .quantize.fold import fold_batchnorm
# NIR export and import
from .nir.exporter import export_nir
from .nir.importer import import_nir
from .checkpoint import load_checkpoint
# deployment metrics, hardware profiles and checks
from .deploy.check import CheckReport, ConstraintViolationError, Violation, check
from .deploy.hardware import HardwareProfile, get_profile, list_profiles, register_profile
from .deploy.metrics import DeployReport, evaluate
from .deploy.ops import OpCounts, count_ops
# one-shot post-training compression (SBC, one-shot CAT)
from .ptq import PostTrainingReport, compress_posttraining
# chip-precision neuron state (importing .neurons.check registers its check rules)
from .neurons.state import StateFormat, quantize_state, state_rules, strip_state
from .neurons import check as _state_check  # noqa: F401
from .neurons.multilevel import MultiLevelNeuron, to_multilevel
# membrane-aware distillation
from .distill.distiller import Distiller
# the whole path as one call
from .pipeline.steps import compress
from .chipfit import FitToChipReport, SweepReport, chip_sweep, fit_to_chip
# hardware targets (Lava): the toolchain's simulator vs ours
from .targets.verify import VerifyReport, verify
# baselines
from .baselines import cluster, convert_to_snn, freeze_baseline, qat, qpsnn, relu_twin, ttq

from ._version import __version__  # noqa: E402

__all__ = [
    # compression (CAT)
    "wrap", "commitment_loss", "freeze", "strip", "round_biases", "codebook_summary", "compressed_layers",
    "is_wrapped", "CodebookWeight", "FrozenCodebook", "fold_batchnorm",
    # running and training
    "run", "record", "RunRecord", "release_state", "reset", "set_progress", "get_progress", "fit", "accuracy", "predict", "recalibrate_bn",
    # adapters
    "Adapter", "register_adapter", "get_adapter", "list_adapters",
    # pruning
    "prune", "PruneReport", "CRITERIA", "register_criterion",
    # deployment metrics, hardware profiles and checks
    "evaluate", "DeployReport", "count_ops", "OpCounts", "check", "CheckReport", "Violation",
    "ConstraintViolationError", "HardwareProfile", "list_profiles", "get_profile", "register_profile",
    # NIR export and import
    "export_nir", "import_nir", "load_checkpoint",
    # one-shot post-training compression
    "compress_posttraining", "PostTrainingReport",
    # chip-precision neuron state, distillation
    "quantize_state", "strip_state", "state_rules", "StateFormat", "Distiller", "to_multilevel", "MultiLevelNeuron",
    # the whole path as one call
    "compress", "fit_to_chip", "chip_sweep", "FitToChipReport", "SweepReport",
    # hardware targets
    "verify", "VerifyReport",
    # baselines
    "ttq", "qat", "cluster", "relu_twin", "convert_to_snn", "qpsnn", "freeze_baseline",
    # results and errors
    "Table", "SpikeFitError", "SpikeFitValueError", "SpikeFitTypeError",
    "UnsupportedLayerError", "NotWrappedError", "InputMismatchError",
    "__version__",
]
