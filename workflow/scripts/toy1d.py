"""The 1-D toy: coordinate attention recovers A^-1 o B."""

from equireg import experiments

experiments.setup_job(snakemake.log, snakemake.threads)
experiments.toy1d(snakemake.output[0])
