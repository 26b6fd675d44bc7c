"""``python -m diffusers_geo.cli``: the command line (what ``accelerate launch -m`` runs)."""

import sys

from . import main

sys.exit(main())
