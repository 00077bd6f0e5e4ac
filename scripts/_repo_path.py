"""Makes this repository's ``nb360`` package importable by the rule scripts in any environment.

Under ``--software-deployment-method conda`` a script runs in the rule's conda environment (``envs/*.yaml``),
which holds the dependencies but not ``nb360`` itself; Snakemake puts this folder on ``sys.path``, so the
scripts import this module first, and it puts the repository root in front. In the project's virtual
environment (editable install) the package is the same files.
"""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
