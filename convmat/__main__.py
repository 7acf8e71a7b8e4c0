"""``python -m convmat``: the command line (see :mod:`convmat.cli`)."""

import sys

from convmat.cli import main

if __name__ == "__main__":
    sys.exit(main())
