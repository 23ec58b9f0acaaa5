"""Draw one figure from the tables."""

from equireg import figures
from equireg.experiments import setup_job

setup_job(snakemake.log, snakemake.threads)
figures.draw(
    snakemake.wildcards.name,
    snakemake.params.tables,
    snakemake.output.png,
    snakemake.output.pdf,
    retina_examples=snakemake.input.retina_examples,
    lung_examples=snakemake.input.lung_examples,
    train=snakemake.input.train,
    landscape_curve=snakemake.input.landscape,
    toy_curve=snakemake.input.toy1d,
)
