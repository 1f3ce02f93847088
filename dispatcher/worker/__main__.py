"""``python -m dutlab.dispatcher.worker``: the same as the dutlab-worker console script."""

import sys

from . import main

sys.exit(main())
