# Aggregation: per-run result files -> tables (CSV, Markdown, LaTeX) -> figures -> claims.md.


rule tables:
    input:
        retina=[
            rules.evaluate_retina.output.table.format(method=m, condition=c, seed=s)
            for m, c in retina_runs()
            for s in SEEDS
        ],
        retina_io=expand(
            rules.evaluate_retina_io.output.table,
            method=IO["retina"]["methods"],
            condition="none",
            seed=SEEDS,
        ),
        shift_sweep=expand(rules.shift_sweep.output.table, method=retina_methods()),
        shift_sweep_io=expand(
            rules.shift_sweep_io.output.table, method=IO["shift_sweep"]["methods"]
        ),
        equivariance=expand(rules.equivariance.output.errors, method=retina_methods()),
        lung=expand(
            rules.evaluate_lung.output.table, method=LUNG["methods"], seed=SEEDS
        ),
        lung_io=expand(
            rules.evaluate_lung_io.output.table,
            method=IO["lung"]["methods"],
            seed=SEEDS,
        ),
        toy1d=rules.toy1d.output.curve,
        landscape=rules.landscape.output.curve,
        curves=learning_curve_files(),
    output:
        [
            (
                report(path, caption="../report/table.rst", category="6 Tables")
                if path.endswith(".csv")
                else path
            )
            for path in all_tables()
        ],
    log:
        f"{RESULTS}/logs/tables.log",
    conda:
        ENV
    params:
        directory=lambda wildcards, output: os.path.dirname(output[0]),
    script:
        "../scripts/tables.py"


rule figure:
    input:
        tables=all_tables(),
        retina_examples=expand(
            rules.evaluate_retina.output.examples,
            method=[m for m, c in retina_runs() if c == "none"],
            condition="none",
            seed=SEEDS[0],
        ),
        lung_examples=expand(
            rules.evaluate_lung.output.examples, method=LUNG["methods"], seed=SEEDS[0]
        ),
        train=retina_set("train", "none"),
        landscape=rules.landscape.output.curve,
        toy1d=rules.toy1d.output.curve,
    output:
        png=report(
            f"{RESULTS}/figures/{{name}}.png",
            caption="../report/figure.rst",
            category=lambda wildcards: figures.SECTIONS[wildcards.name],
        ),
        pdf=f"{RESULTS}/figures/{{name}}.pdf",
    log:
        f"{RESULTS}/logs/figures/{{name}}.log",
    wildcard_constraints:
        name="|".join(FIGURES),
    conda:
        ENV
    params:
        tables=tables_directory,
    script:
        "../scripts/figure.py"


rule claims:
    input:
        tables=all_tables(),
        brain=brain_tables() if BRAIN["in_all"] else [],
    output:
        markdown=report(
            f"{RESULTS}/claims.md", caption="../report/claims.rst", category="0 Claims"
        ),
        csv=f"{RESULTS}/claims.csv",
    log:
        f"{RESULTS}/logs/claims.log",
    conda:
        ENV
    params:
        tables=tables_directory,
        copdgene=config.get("datasets", {}).get("copdgene"),
        brain=BRAIN["in_all"],
    script:
        "../scripts/claims.py"


rule summary:
    input:
        claims=rules.claims.output.csv,
        tables=expand(TABLE, name=landing_leaderboards(), ext="csv"),
    output:
        f"{RESULTS}/summary.html",
    log:
        f"{RESULTS}/logs/summary.log",
    conda:
        ENV
    script:
        "../scripts/summary.py"


rule reproduction:
    input:
        tables=all_tables(),
        reference=expand(REFERENCE_TABLE, name=reproduction.TABLES, ext="csv"),
    output:
        f"{RESULTS}/reproduction.md",
    log:
        f"{RESULTS}/logs/reproduction.log",
    conda:
        ENV
    params:
        tables=tables_directory,
        reference=lambda wildcards, input: os.path.dirname(input.reference[0]),
        spread=f"results/reference/{reproduction.CROSS_CPU}",
    script:
        "../scripts/reproduction.py"


# defined only when asked for, so that nothing else can ever overwrite the committed reference
if REFRESH_REFERENCE:

    rule reference:
        input:
            claims=rules.claims.output.markdown,
            tables=all_tables(),
            figures=all_figures(),
        output:
            claims="results/reference/claims.md",
            tables=expand(REFERENCE_TABLE, name=tables.NAMES, ext=["csv", "md", "tex"]),
            figures=expand(REFERENCE_FIGURE, name=FIGURES, ext=["png", "pdf"]),
        log:
            f"{RESULTS}/logs/reference.log",
        conda:
            ENV
        script:
            "../scripts/reference.py"
