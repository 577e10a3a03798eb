"""``python -m pyro_vae``: the ``pyro-vae`` command, e.g. under ``torchrun -m pyro_vae train ...``."""

import sys

from .cli import main

sys.exit(main())
