"""Architecture search: the DARTS cell search space (:mod:`nb360.search.darts_space`)."""

from nb360.search.darts_space import (
    OPS,
    PRIMITIVES,
    Genotype,
    MixedOp,
    SearchCell,
    Supernet,
    derive_genotype,
)

__all__ = ["OPS", "PRIMITIVES", "Genotype", "MixedOp", "SearchCell", "Supernet", "derive_genotype"]
