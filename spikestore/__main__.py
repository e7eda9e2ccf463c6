"""``python -m spikestore``: the command line (see :mod:`spikestore.cli`)."""

from .cli import main

raise SystemExit(main())
