"""One-shot post-training compression: Spiking Brain Compression (OBS pruning, GPTQ rounding) and one-shot CAT.

:func:`compress_posttraining` is the call; :mod:`.hessian` (leak kernel, spike-train Hessian),
:mod:`.obs` (OBS pruning, GPTQ) and :mod:`.codebook` (closed-form codebooks) are its parts.
"""

from .api import compress_posttraining, lamp_counts
from .report import LayerPostTraining, PostTrainingReport

__all__ = ["compress_posttraining", "lamp_counts", "PostTrainingReport", "LayerPostTraining"]
