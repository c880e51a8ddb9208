"""Ready-made networks for the demo, benchmarks, tests and examples, one module per framework.

Not an adapter and not the core: ``snn_spikefit.zoo.snntorch`` needs snnTorch,
``snn_spikefit.zoo.norse`` needs Norse; ``snn_spikefit.zoo.demo`` is what
``spikefit demo`` runs.
"""
