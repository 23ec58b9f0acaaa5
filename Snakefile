# equireg: `snakemake --cores all` regenerates every result, table and figure of the default preset;
# `snakemake --cores all --config preset=smoke|default|paper` picks another (config/config.yaml).
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/retina.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/lung.smk"
include: "workflow/rules/brain.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        rules.claims.output,
        rules.summary.output,
        all_tables(),
        all_figures(),
        brain_in_all(),
        # the default preset compares itself with results/reference/ (or refreshes it)
        reference_outputs(),
