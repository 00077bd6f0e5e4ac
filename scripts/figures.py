"""Rule figures: performance profiles, learning curves and parameter counts (PNG and PDF)."""

from pathlib import Path

import _repo_path  # noqa: F401 (nb360 importable in conda environments)

from nb360.logs import log_to
from nb360.report.figures import learning_curves, parameter_counts, performance_profiles
from nb360.report.tables import read_scores

smk = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(smk.log[0]):
    performance_profiles(read_scores(smk.input.scores), Path(smk.output.profiles).with_suffix(""))
    learning_curves(smk.input.histories, Path(smk.output.curves).with_suffix(""))
    parameter_counts(smk.input.histories, Path(smk.output.params).with_suffix(""))
