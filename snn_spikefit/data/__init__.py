"""Data that installs offline: digits, Fashion-MNIST, tonic event data from a local folder.

>>> from snn_spikefit.data import digits
>>> train, test = digits()
>>> len(train) + len(test)
1797
"""

from .datasets import DATASETS, FASHION_MNIST_ROOT, digits, fashion_mnist, load_dataset, make_loader, read_idx

__all__ = ["digits", "fashion_mnist", "read_idx", "make_loader", "load_dataset", "DATASETS", "FASHION_MNIST_ROOT"]
