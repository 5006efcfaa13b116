"""``python -m hotr``: the same as the ``hotr`` command."""

import sys

from .cli import main

sys.exit(main())
