"""mmfsl_jax: multimodal few-shot learning in JAX.

Pure (init, apply) components -- encoders, aligners, fusers -- composed into a multimodal
embedding model, and meta-learners (ProtoNet, the MAML family, ...) whose task losses are
vmapped over task batches inside one jitted meta-step.

The public names are imported explicitly in `__init__.pyi` (what IDEs and type checkers
read); here they load on first use from that same file, so `import mmfsl_jax` alone loads
neither jax nor flax and the `mmfsl` command starts (and restarts itself,
run/host_memory.py) without them.
"""
import lazy_loader

__version__ = "0.1.0"

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
