"""``python -m pyro_vae``: the ``pyro-vae`` command, e.g. under ``torchrun -m pyro_vae train ...``."""

import sys

from pyro_vae.cli import main

sys.exit(main())
