"""Architectures, head replacement, freezing and offline weight resolution."""

from maskwatch.models.weights import WeightsChecksumError, WeightsNotFoundError, resolve_pretrained

__all__ = [
    "WeightsChecksumError",
    "WeightsNotFoundError",
    "available_archs",
    "create_model",
    "get_arch",
    "resolve_pretrained",
    "set_trainable",
    "split_model",
]


def __getattr__(name: str):
    # The registry imports torch; keep `import maskwatch.models` light for torch-free installs.
    if name in ("available_archs", "create_model", "split_model", "set_trainable", "get_arch", "num_blocks"):
        from maskwatch.models import registry

        return getattr(registry, name)
    raise AttributeError(name)
