"""Build the lung pairs (train, val or test) with known deformations and landmarks."""

from equireg import experiments

experiments.setup_job(snakemake.log, snakemake.threads)
experiments.build_lung_set(
    snakemake.output[0],
    split=snakemake.wildcards.split,
    settings=snakemake.params.lung,
    copdgene=snakemake.params.copdgene,
    dirlab4dct=snakemake.params.dirlab4dct,
    nlst=snakemake.params.nlst,
    chest_ct=snakemake.input.get("chest_ct"),
)
