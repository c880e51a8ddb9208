"""Framework adapters, installed as ``snn_spikefit.adapters``.

One module per framework (``snntorch``, ``norse``, ``spikingjelly``); each imports its framework
lazily. :data:`ADAPTERS` lists them for the core's discovery (in this order,
which is also the order of :func:`snn_spikefit.adapter.nir_frameworks`); the
same adapters are registered through the entry-point group
``snn_spikefit.adapters`` for installed copies. See :mod:`snn_spikefit.adapter`.
"""

#: name -> ``"module:Class"`` of every built-in adapter, in discovery order.
ADAPTERS = {
    "snntorch": "snn_spikefit.adapters.snntorch:SnnTorchAdapter",
    "norse": "snn_spikefit.adapters.norse:NorseAdapter",
    "spikingjelly": "snn_spikefit.adapters.spikingjelly:SpikingJellyAdapter",
}
