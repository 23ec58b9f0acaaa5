"""[U,U] and [W,U] translation-equivariance error of one method."""

from equireg import experiments

experiments.setup_job(snakemake.log, snakemake.threads)
experiments.equivariance(
    snakemake.wildcards.method,
    snakemake.input.model or None,
    snakemake.input.test,
    snakemake.output[0],
    settings=snakemake.params.settings,
    **snakemake.params.equivariance,
)
