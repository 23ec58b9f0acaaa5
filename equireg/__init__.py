"""equireg: equivariant image registration (CARL) and baselines, with a reproducible benchmark."""

__version__ = "0.1.0"
