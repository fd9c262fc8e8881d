"""``python -m gradconf.bench``: run the Gram benchmark."""

import sys

from gradconf.bench.cli import main

sys.exit(main())
