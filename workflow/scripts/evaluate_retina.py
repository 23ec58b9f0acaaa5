"""Dice and folds of one trained method on every retina test set (or, with params.io, of its
"method (IO)" variant on the first pairs of the IO test sets)."""

from equireg import experiments

experiments.setup_job(snakemake.log, snakemake.threads)
experiments.evaluate_retina(
    snakemake.wildcards.method,
    snakemake.input.model or None,
    snakemake.input.tests,
    snakemake.output.table,
    snakemake.output.get("examples"),
    snakemake.params.settings,
    train_condition=snakemake.wildcards.condition,
    seed=int(snakemake.wildcards.seed),
    runtime=snakemake.output.runtime,
    io=snakemake.params.io,
)
