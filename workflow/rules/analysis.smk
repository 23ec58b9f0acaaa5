# Beyond the Dice table: capture radius (shift sweep), equivariance error, loss landscape, 1-D toy.


rule sweep_data:
    output:
        pairs=f"{RESULTS}/data/retina/sweep.npz",
    log:
        f"{RESULTS}/logs/sweep_data.log",
    priority: DATA_PRIORITY
    conda:
        ENV
    params:
        sweep=PRESET_CONFIG["shift_sweep"],
        retina=RETINA,
    script:
        "../scripts/sweep_data.py"


rule shift_sweep:
    input:
        model=sweep_model,
        pairs=rules.sweep_data.output.pairs,
    output:
        table=f"{RESULTS}/shift_sweep/{{method}}.csv",
    log:
        f"{RESULTS}/logs/shift_sweep/{{method}}.log",
    conda:
        ENV
    threads: 1
    params:
        settings=lambda wc: method_settings(wc.method),
        io=None,
    script:
        "../scripts/shift_sweep.py"


use rule shift_sweep as shift_sweep_io with:
    output:
        table=f"{RESULTS}/shift_sweep_io/{{method}}.csv",
    log:
        f"{RESULTS}/logs/shift_sweep_io/{{method}}.log",
    params:
        settings=lambda wc: method_settings(wc.method),
        io=io_settings("shift_sweep"),


rule equivariance:
    input:
        model=sweep_model,
        test=retina_set("test", "none"),
    output:
        errors=f"{RESULTS}/equivariance/{{method}}.json",
    log:
        f"{RESULTS}/logs/equivariance/{{method}}.log",
    conda:
        ENV
    threads: 1
    params:
        settings=lambda wc: method_settings(wc.method),
        equivariance=PRESET_CONFIG["equivariance"],
    script:
        "../scripts/equivariance.py"


rule landscape:
    input:
        pairs=retina_set("train", "none"),
        model=not_shifted_model(LANDSCAPE["method"]),
    output:
        curve=f"{RESULTS}/landscape/landscape.csv",
    log:
        f"{RESULTS}/logs/landscape.log",
    benchmark:
        f"{RESULTS}/benchmarks/landscape.tsv"
    conda:
        ENV
    threads: 1
    params:
        method=LANDSCAPE["method"],
        stride=LANDSCAPE["stride"],
        settings=method_settings(LANDSCAPE["method"]),
    script:
        "../scripts/landscape.py"


rule toy1d:
    output:
        curve=f"{RESULTS}/toy1d/toy1d.csv",
    log:
        f"{RESULTS}/logs/toy1d.log",
    conda:
        ENV
    script:
        "../scripts/toy1d.py"
