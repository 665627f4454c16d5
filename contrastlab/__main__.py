"""``python -m contrastlab ...``: see `contrastlab.cli`."""
import sys

try:
    from .cli import main
except KeyboardInterrupt:            # Ctrl-C while torch is still being imported
    print("interrupted: stopped by Ctrl-C", file=sys.stderr)
    raise SystemExit(130) from None

raise SystemExit(main())
