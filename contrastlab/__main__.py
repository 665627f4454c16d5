"""``python -m contrastlab ...``: see `contrastlab.cli`."""
from .cli import main

raise SystemExit(main())
