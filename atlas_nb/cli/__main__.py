"""``python -m atlas_nb.cli``: the same as the ``atlas-nb`` console script."""

from atlas_nb.cli import main

raise SystemExit(main())
