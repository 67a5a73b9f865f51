"""``python -m train.evaluate_real`` (the same as ``python -m train evaluate-real``)."""

import sys

from train.evaluate_real.cli import main

sys.exit(main())
