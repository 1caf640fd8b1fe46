"""``python -m atlas_nb.sandbox [--port N] [--host H]``: the same as ``atlas-nb sandbox``."""

import sys

from atlas_nb.cli import main

raise SystemExit(main(["sandbox", *sys.argv[1:]]))
