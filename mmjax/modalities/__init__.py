"""The built-in modalities, one file each (image, text, audio): the Modality object (its
`MODALITY`, with its place in the canonical order), its tokenizer, its manifest reading and its
preprocessing ops. The protocol and the registry that finds them are mmjax.modality, below the
data and model packages these files build on."""
