"""Build the brain pairs (train, val or test) of Colin27 under random warps with exact maps."""

from equireg import experiments

experiments.setup_job(snakemake.log, snakemake.threads)
experiments.build_brain_set(
    snakemake.output[0],
    split=snakemake.wildcards.split,
    settings=snakemake.params.pairs,
    colin27=snakemake.input.colin27,
)
