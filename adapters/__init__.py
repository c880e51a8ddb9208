"""Framework adapters, installed as ``snn_spikefit.adapters``.

One module per framework (``snntorch``, ``norse``); each imports its framework
lazily. They are registered through the entry-point group
``snn_spikefit.adapters``; see :mod:`snn_spikefit.adapter`.
"""
