"""``python -m flow3d`` is the ``flow3d`` command."""

import sys

from flow3d.cli import main

if __name__ == "__main__":
    sys.exit(main())
