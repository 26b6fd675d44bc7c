"""``python -m diffusers_geo``: the same as the ``diffusers-geo`` command."""

import sys

from .cli import main

sys.exit(main())
