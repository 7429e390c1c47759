"""Models: per-modality encoders, late fusion, per-modality logits."""

from core.models.multimodal import ModelOutput, MultimodalModel

__all__ = ["ModelOutput", "MultimodalModel", "build_model"]


def build_model(cfg, bundle) -> MultimodalModel:
    """Model for ``bundle``'s modalities from ``cfg.model`` (a :class:`core.config.ModelConfig`)."""
    mc = cfg.model
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
        heads=mc.heads,
    )
