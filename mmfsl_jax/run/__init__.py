"""Running experiments: the builder that reads a config (build), training (train),
checkpoints, workdirs, evaluators, devices (sharding) and faults.

Submodules load on first use, so `mmfsl` can import `run.host_memory` without jax.
"""
import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__, submodules=["build", "checkpoint", "config", "data", "evaluators", "faults", "legacy",
                          "host_memory", "predict", "sharding", "throughput", "train", "workdir"])
