"""Get Colin27 + AAL (config path, installed package, else apt-get download) and cache them on the
brain experiment's canvas."""

from equireg import experiments

experiments.setup_job(snakemake.log, snakemake.threads)
experiments.build_colin27(
    snakemake.output[0],
    settings=snakemake.params.canvas,
    configured=snakemake.params.configured,
    download_folder=snakemake.params.download,
)
