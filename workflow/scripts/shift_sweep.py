"""Dice against shift magnitude for one method (its capture radius)."""

from equireg import experiments

experiments.setup_job(snakemake.log, snakemake.threads)
experiments.shift_sweep(
    snakemake.wildcards.method,
    snakemake.input.model or None,
    snakemake.input.pairs,
    snakemake.output[0],
    settings=snakemake.params.settings,
    io=snakemake.params.io,
)
