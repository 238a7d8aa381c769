"""Data shipped with ckd_lib: the recipes and the published numbers, each with its source."""
