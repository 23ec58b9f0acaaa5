"""Draw the brain figure from the brain tables."""

from equireg import figures
from equireg.experiments import setup_job

setup_job(snakemake.log, snakemake.threads)
figures.draw_brain(snakemake.wildcards.name, snakemake.params.tables, snakemake.output.png, snakemake.output.pdf)
