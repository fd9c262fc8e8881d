"""Run the Gram benchmark and update the gram section of docs/benchmarks.md.

Usage: ``python benchmarks/gram.py [--quick] [--cases ...] [--methods ...]``; see ``--help``.
The implementation is ``gradconf.bench``, also available as ``gradconf bench``.
"""

import sys
from pathlib import Path

from gradconf.bench import main

if __name__ == "__main__":
    docs = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
    sys.exit(main(default_out=str(docs)))
