# Brain: Colin27 + AAL under random smooth warps with known maps; methods trained without shifts,
# then scored on AAL Dice with the moving image shifted by whole voxels (the paper's HCP figure).
# `snakemake --cores all brain` runs it alone; presets with brain.in_all run it with everything.


rule brain_data:
    output:
        f"{RESULTS}/data/brain/colin27.npz",
    log:
        f"{RESULTS}/logs/brain_data.log",
    priority: DATA_PRIORITY
    conda:
        ENV
    params:
        # only what shapes the canvas: a change of schedules must not rebuild the data
        canvas={
            **{key: BRAIN[key] for key in ("spacing_mm", "axis", "shifts")},
            "pooling": XI_POOLING,
        },
        configured=config.get("datasets", {}).get("colin27"),
        download=f"{RESULTS}/data/brain/download",
    script:
        "../scripts/brain_data.py"


rule brain_pair_data:
    input:
        colin27=rules.brain_data.output[0],
    output:
        pairs=f"{RESULTS}/data/brain/{{split}}.npz",
    log:
        f"{RESULTS}/logs/brain_pair_data/{{split}}.log",
    wildcard_constraints:
        split="train|val|test",
    priority: DATA_PRIORITY
    conda:
        ENV
    params:
        pairs={
            key: BRAIN[key]
            for key in ("pairs", "train_pairs", "val_pairs", "rms_mm")
            if key in BRAIN
        },
    script:
        "../scripts/brain_pair_data.py"


rule train_brain:
    input:
        train=rules.brain_pair_data.output.pairs.format(split="train"),
        val=rules.brain_pair_data.output.pairs.format(split="val"),
    output:
        model=f"{RESULTS}/models/brain/{{method}}/seed{{seed}}.pt",
        curve=f"{RESULTS}/curves/brain/{{method}}/seed{{seed}}.csv",
    log:
        f"{RESULTS}/logs/train_brain/{{method}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_brain/{{method}}_seed{{seed}}.tsv"
    priority: training_priority("brain", lambda m: method_settings(m, BRAIN))
    conda:
        ENV
    threads: 1
    resources:
        gpu=1,
    params:
        settings=lambda wc: method_settings(wc.method, BRAIN),
        batch_size=2,
        checkpoints=lambda wc: f"{RESULTS}/checkpoints/brain/{wc.method}/seed{wc.seed}",
        run=lambda wc: {
            "experiment": "brain",
            "method": wc.method,
            "train_condition": "none",
            "seed": int(wc.seed),
        },
    script:
        "../scripts/train.py"


rule evaluate_brain:
    input:
        model=brain_model,
        test=rules.brain_pair_data.output.pairs.format(split="test"),
    output:
        table=f"{RESULTS}/brain/{{method}}/seed{{seed}}.csv",
        labels=f"{RESULTS}/brain/{{method}}/seed{{seed}}_labels.csv",
        runtime=f"{RESULTS}/benchmarks/evaluate_brain/{{method}}_seed{{seed}}_per_pair.tsv",
    log:
        f"{RESULTS}/logs/evaluate_brain/{{method}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate_brain/{{method}}_seed{{seed}}.tsv"
    conda:
        ENV
    threads: 1
    params:
        settings=lambda wc: method_settings(wc.method, BRAIN),
        shifts=BRAIN["shifts"],
        axis=BRAIN["axis"],
        io=None,
    script:
        "../scripts/evaluate_brain.py"


use rule evaluate_brain as evaluate_brain_io with:
    output:
        table=f"{RESULTS}/brain_io/{{method}}/seed{{seed}}.csv",
        labels=f"{RESULTS}/brain_io/{{method}}/seed{{seed}}_labels.csv",
        runtime=f"{RESULTS}/benchmarks/evaluate_brain_io/{{method}}_seed{{seed}}_per_pair.tsv",
    log:
        f"{RESULTS}/logs/evaluate_brain_io/{{method}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate_brain_io/{{method}}_seed{{seed}}.tsv"
    params:
        settings=lambda wc: method_settings(wc.method, BRAIN),
        shifts=BRAIN["shifts"],
        axis=BRAIN["axis"],
        io=io_settings("brain"),


rule brain_tables:
    input:
        brain=expand(
            rules.evaluate_brain.output.table, method=BRAIN["methods"], seed=SEEDS
        ),
        brain_labels=expand(
            rules.evaluate_brain.output.labels, method=BRAIN["methods"], seed=SEEDS
        ),
        brain_io=expand(
            rules.evaluate_brain_io.output.table, method=BRAIN_IO_METHODS, seed=SEEDS
        ),
        brain_io_labels=expand(
            rules.evaluate_brain_io.output.labels, method=BRAIN_IO_METHODS, seed=SEEDS
        ),
        curves=brain_curve_files(),
    output:
        [
            (
                report(path, caption="../report/table.rst", category="6 Tables")
                if path.endswith(".csv")
                else path
            )
            for path in brain_tables()
        ],
    log:
        f"{RESULTS}/logs/brain_tables.log",
    conda:
        ENV
    params:
        directory=lambda wildcards, output: os.path.dirname(output[0]),
    script:
        "../scripts/brain_tables.py"


rule brain_figure:
    input:
        tables=brain_tables(),
    output:
        png=report(
            f"{RESULTS}/figures/{{name}}.png",
            caption="../report/figure.rst",
            category=lambda wildcards: figures.BRAIN_SECTIONS[wildcards.name],
        ),
        pdf=f"{RESULTS}/figures/{{name}}.pdf",
    log:
        f"{RESULTS}/logs/figures/{{name}}.log",
    wildcard_constraints:
        name="|".join(figures.BRAIN_SECTIONS),
    conda:
        ENV
    params:
        tables=tables_directory,
    script:
        "../scripts/brain_figure.py"


# a preset that runs the brain with everything checks its claims in claims.md (rule claims); one
# that runs it on demand checks them here, beside it
if not BRAIN["in_all"]:

    rule brain_claims:
        input:
            tables=brain_tables(),
        output:
            markdown=report(
                f"{RESULTS}/brain_claims.md",
                caption="../report/claims.rst",
                category="0 Claims",
            ),
            csv=f"{RESULTS}/brain_claims.csv",
        log:
            f"{RESULTS}/logs/brain_claims.log",
        conda:
            ENV
        params:
            tables=tables_directory,
        script:
            "../scripts/brain_claims.py"


# defined only when asked for, like rule reference: `snakemake --cores all brain --config
# refresh_reference=true` adds the brain experiment to results/reference/
if REFRESH_REFERENCE:

    rule brain_reference:
        input:
            claims=[] if BRAIN["in_all"] else rules.brain_claims.output.markdown,
            tables=brain_tables(),
            figures=brain_figures(FIGURE),
        output:
            claims=[] if BRAIN["in_all"] else "results/reference/brain_claims.md",
            tables=[
                path.replace(f"{RESULTS}/", "results/reference/")
                for path in brain_tables()
            ],
            figures=brain_figures(REFERENCE_FIGURE),
        log:
            f"{RESULTS}/logs/brain_reference.log",
        conda:
            ENV
        script:
            "../scripts/reference.py"


rule brain:
    input:
        brain_tables(),
        brain_figures(FIGURE),
        [] if BRAIN["in_all"] else rules.brain_claims.output,
        rules.brain_reference.output if REFRESH_REFERENCE else [],
