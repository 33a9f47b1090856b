"""The conformance suite, the same as ``nextclick bench``: every model's recommended preset against its
reference figures, one table (see nextclick.bench for the rows, sources and tolerances).

    python benchmarks/conformance.py --quick                       # the CI subset, a minute or two
    python benchmarks/conformance.py --out runs/conformance.md     # the full suite (about 25 min)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nextclick.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.argv = ["nextclick", "bench", *sys.argv[1:]]
    main()
