"""Build the shift sweep's pairs once for every method (seeded and byte-reproducible)."""

from equireg import experiments

experiments.setup_job(snakemake.log, snakemake.threads)
experiments.build_sweep_set(
    snakemake.output[0], sweep=snakemake.params.sweep, retina=snakemake.params.retina
)
