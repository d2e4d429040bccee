"""``python -m flash_exp.prefetch``: see :mod:`flash_exp.prefetch`."""

import sys

from flash_exp.prefetch.listing import main

if __name__ == "__main__":
    sys.exit(main())
