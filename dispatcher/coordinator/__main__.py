"""``python -m dutlab.dispatcher.coordinator``: the same as the dutlab-coordinator console script."""

import sys

from . import main

sys.exit(main())
