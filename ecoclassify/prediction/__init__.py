"""Labelling images with a trained model: inputs -> decoding and model runner (local threads or
Dask) -> checkpoints -> output files (csv, json, MegaDetector) -> sequences -> sorting."""
