"""Reference MARS: the procedural world, tokenizers, the SemVIE model and its samplers (pure torch + transformers)."""
