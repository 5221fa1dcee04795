"""Neural components, each a pure (init, apply) pair: encoders per modality, aligners into a
shared space, fusers into one vector per example."""
from mmfsl_jax.nn import align, encoders, fuse

__all__ = ["align", "encoders", "fuse"]
