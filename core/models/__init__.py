"""Models: per-modality encoders, late fusion, per-modality logits."""

from modalscope.models.fusion import FUSIONS
from modalscope.models.multimodal import ModelOutput, MultimodalModel, resolve_heads

__all__ = ["ModelOutput", "MultimodalModel", "build_model", "resolve_heads"]


def build_model(cfg, bundle, heads: str | None = None) -> MultimodalModel:
    """Model for ``bundle``'s modalities from ``cfg.model`` (a :class:`modalscope.config.ModelConfig`).

    ``heads`` is the resolved head kind (:func:`resolve_heads`); None resolves ``cfg.model.heads``
    with no method preference.
    """
    mc = cfg.model
    if heads is None:
        sliced = FUSIONS[mc.fusion if len(bundle.modalities) > 1 else "sum"].sliced
        heads, _ = resolve_heads(mc.heads, None, sliced)
    return MultimodalModel(
        modalities=bundle.modalities,
        kinds=bundle.kinds,
        shapes=bundle.shapes,
        n_out=bundle.n_classes,
        hidden=mc.hidden,
        embed_dim=mc.embed_dim,
        depth=mc.depth,
        dropout=mc.dropout,
        fusion=mc.fusion,
        heads=heads,
    )
