"""Train one method on one pair set (retina or lung); resumes from its checkpoints after a kill."""

from equireg import experiments

experiments.setup_job(snakemake.log, snakemake.threads)
experiments.train_method(
    snakemake.input.train,
    snakemake.output.model,
    snakemake.params.checkpoints,
    method=snakemake.wildcards.method,
    settings=snakemake.params.settings,
    batch_size=snakemake.params.batch_size,
    seed=int(snakemake.wildcards.seed),
    validation=snakemake.input.val,
    curve=snakemake.output.curve,
    run=snakemake.params.run,
)
