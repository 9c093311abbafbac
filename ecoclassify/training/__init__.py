"""Training: the run (``session``), its stages of compile + fit (``stages``), callbacks and the
feature cache for frozen-backbone stages."""
