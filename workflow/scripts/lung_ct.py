"""Get the two chest CTs (config path, else pip download) and cache them on the preset's lung grid."""

from equireg import experiments

experiments.setup_job(snakemake.log, snakemake.threads)
experiments.build_chest_ct(
    snakemake.output[0],
    size=snakemake.params.size,
    configured=snakemake.params.configured,
    download_folder=snakemake.params.download,
)
