"""mTRE and folds of one method on the lung test pairs."""

from equireg import experiments

experiments.setup_job(snakemake.log, snakemake.threads)
experiments.evaluate_lung(
    snakemake.wildcards.method,
    snakemake.input.model or None,
    snakemake.input.test,
    snakemake.output.table,
    snakemake.output.get("examples"),
    snakemake.params.settings,
    seed=int(snakemake.wildcards.seed),
    runtime=snakemake.output.runtime,
    io=snakemake.params.io,
)
