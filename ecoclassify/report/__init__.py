"""The evaluation report: metrics, auto-labelling thresholds, plots, HTML and Markdown pages,
written by ``writer.write_report`` for training's test split and for ``ecoclassify evaluate``."""
