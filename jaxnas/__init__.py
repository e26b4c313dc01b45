"""jaxnas: compression-aware neural architecture search for small Transformers in JAX/Flax."""
