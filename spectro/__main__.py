"""`python -m spectro ...`: the same as the `spectro` command (and what `torchrun -m spectro` runs)."""

import sys

from .cli import main

sys.exit(main())
