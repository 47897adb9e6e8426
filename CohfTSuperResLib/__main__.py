"""`python -m CohfTSuperResLib ...` is `cohft-sr ...` (for a Python without the console script, e.g. Slicer's)."""

from CohfTSuperResLib.cli import main

raise SystemExit(main())
