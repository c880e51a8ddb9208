"""``python -m snn_spikefit``: the ``spikefit`` command line."""

import sys

from snn_spikefit.cli import main

if __name__ == "__main__":
    sys.exit(main())
