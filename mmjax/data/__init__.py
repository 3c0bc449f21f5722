"""Datasets, preprocessing and loading (see mmjax.data.loader for the host-batch format)."""


def presence_key(modality):
  """The host-batch key of bool[B] 'this example has `modality`'. Batches from a mixture whose
  entries lack a modality carry it (zeros stand in for what is missing); without the key, every
  example has every modality in the batch."""
  return f"has_{modality}"
