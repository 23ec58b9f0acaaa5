"""Loss and dL/dt of a translation against TwoStep{translation, network}."""

from equireg import experiments

experiments.setup_job(snakemake.log, snakemake.threads)
experiments.landscape(snakemake.input[0], snakemake.output[0], seed=snakemake.params.seed, **snakemake.params.landscape)
