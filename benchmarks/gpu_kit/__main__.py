"""``python -m benchmarks.gpu_kit``: see :mod:`benchmarks.gpu_kit.cli`."""

from benchmarks.gpu_kit.cli import main

raise SystemExit(main())
