"""Data that installs offline (digits, Fashion-MNIST, tonic event data from a local folder) and the
registry of named data sources (:func:`load_data`, :func:`register_data_source`).

>>> from snn_spikefit.data import digits, load_data
>>> train, test = digits()
>>> len(train) + len(test)
1797
>>> load_data("digits", limit=100).sample_shape
(1, 8, 8)
"""

from .datasets import FASHION_MNIST_ROOT, digits, fashion_mnist, make_loader, read_idx
from .sources import DATA_SOURCES, DataOptions, DataSource, LoadedData, load_data, register_data_source

__all__ = ["digits", "fashion_mnist", "read_idx", "make_loader", "FASHION_MNIST_ROOT",
           # named data sources
           "load_data", "register_data_source", "DATA_SOURCES", "DataSource", "DataOptions", "LoadedData"]
