"""Datasets, preprocessing and loading (see mmjax.data.loader for the host-batch format)."""
