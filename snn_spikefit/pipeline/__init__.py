"""The whole path as one call (:func:`compress`: wrap, fine-tune, prune, freeze, evaluate, check, export),
its result (:class:`CompressResult`) and the human report (:func:`write_report`)."""

from .report import codebook_records, layer_stats, write_report
from .result import CompressResult
from .steps import compress

__all__ = ["compress", "CompressResult", "write_report", "layer_stats", "codebook_records"]
