"""``python -m fr_shield``: the same dispatcher as the ``fr-shield`` command."""

import sys

from fr_shield.app.cli import main

if __name__ == "__main__":
    sys.exit(main())
