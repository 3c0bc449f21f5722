"""mmjax: one Transformer for images, text and audio, pretrained with masked modeling and
contrastive objectives in JAX/Flax NNX."""
