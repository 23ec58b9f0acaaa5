"""AAL Dice, HD95, folds of one method on the brain test pairs at every shift of the sweep."""

from equireg import experiments

experiments.setup_job(snakemake.log, snakemake.threads)
experiments.evaluate_brain(
    snakemake.wildcards.method,
    snakemake.input.model or None,
    snakemake.input.test,
    snakemake.output.table,
    snakemake.output.labels,
    snakemake.params.settings,
    seed=int(snakemake.wildcards.seed),
    shifts=snakemake.params.shifts,
    axis=snakemake.params.axis,
    runtime=snakemake.output.runtime,
    io=snakemake.params.io,
)
