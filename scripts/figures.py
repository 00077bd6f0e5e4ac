"""Rule figures: performance profiles, learning curves, parameter counts (figure and table) and the paper's
comparison figures (PNG and PDF)."""

from pathlib import Path

import _repo_path  # noqa: F401 (nb360 importable in conda environments)

from nb360.logs import log_to
from nb360.report.comparison import comparison_profiles, size_vs_performance
from nb360.report.figures import (
    learning_curves,
    load_histories,
    parameter_counts,
    performance_profiles,
    write_parameter_table,
)
from nb360.report.tables import load_paper_results, read_scores

smk = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(smk.log[0]):
    scores = read_scores(smk.input.scores)
    performance_profiles(scores, Path(smk.output.profiles).with_suffix(""))
    histories = load_histories(smk.input.histories)  # read and checked once, for every figure
    learning_curves(histories, Path(smk.output.curves).with_suffix(""))
    parameter_counts(histories, Path(smk.output.params).with_suffix(""))
    write_parameter_table(histories, Path(smk.output.params_table).with_suffix(""))
    comparison_profiles(scores, load_paper_results(), Path(smk.output.profiles_all).parent)
    size_vs_performance(histories, Path(smk.output.size).with_suffix(""))
