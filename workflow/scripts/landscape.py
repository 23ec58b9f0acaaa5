"""Loss and dL/dt of a translation against TwoStep{translation, trained network}."""

from equireg import experiments

experiments.setup_job(snakemake.log, snakemake.threads)
experiments.landscape(
    snakemake.input.pairs,
    snakemake.input.model,
    snakemake.output[0],
    method=snakemake.params.method,
    settings=snakemake.params.settings,
    stride=snakemake.params.stride,
)
