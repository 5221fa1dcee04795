"""`mmfsl plot`: figures drawn from the files the library writes (metrics.jsonl, eval JSON).

    curves.py    training loss and accuracy, validation accuracy with its 95% band
    embeddings.py  a 2-D map of test-class embeddings per modality and fused
    compare.py   accuracy, macro recall and F1 with 95% error bars, grouped
    shots.py     accuracy against k-shot, a line per model and way
    fusion.py    what the fuser learned (weights, gated/AM3 mixing per class, attention)
    records.py   the files read back, with a clear error for a missing or empty one

Each function returns the matplotlib Figure it drew and saves it (PNG or SVG, by the
output's suffix); matplotlib runs headless (the Agg backend).
"""
