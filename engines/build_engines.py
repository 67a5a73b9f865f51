#!/usr/bin/env python3
"""Build a model set's TensorRT engines from a checkout: ``python engines/build_engines.py ...``.

The same as ``norface-rt build-engines ...`` (every option is that command's); the builder itself
is the package's :mod:`norface_rt.engines`. This folder holds nothing importable.
"""

import sys

from norface_rt.cli import main

if __name__ == "__main__":
    sys.exit(main(["build-engines", *sys.argv[1:]]))
