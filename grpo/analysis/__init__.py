"""Tracked runs, analysed: `grpo.compare`'s layers, one concern per module.

    runs       the MLflow store, which runs to compare, their metric histories
    run_table  the params that differ, the metric columns, one row per run, the `Table`
    repeats    runs of one configuration over several seeds: mean ± sd (min–max), bands
    run_plots  metric curves and sweep scatters of those rows (drawn by `grpo.plots`)

Each imports only the ones above it; `grpo.compare` is the command line over them.
"""
