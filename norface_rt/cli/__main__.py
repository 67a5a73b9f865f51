import sys

from norface_rt.cli import main

sys.exit(main())
