"""Data files shipped with ckd_lib: the recipes and the published numbers, each row with its source."""
