"""The precomputed NB201-space benchmark on NinaPro and Darcy Flow (nb201.md, nb360.md 3.7)."""
