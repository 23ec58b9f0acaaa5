"""Build one retina pair set (split x condition), seeded and byte-reproducible."""

from equireg import experiments

experiments.setup_job(snakemake.log, snakemake.threads)
experiments.build_retina_set(
    snakemake.output[0],
    split=snakemake.wildcards.split,
    condition=snakemake.wildcards.condition,
    settings=snakemake.params.retina,
    drive=snakemake.params.drive,
)
