"""Explaining a classifier: class activation maps, where their mass falls, and views of the network's
insides (feature maps, filters, weights). Needs the ``train`` extra (torch, grad-cam)."""

from maskwatch.explain.cam import (
    CamExplainer,
    CamResult,
    available_methods,
    explain_batch,
    find_target_layer,
    overlay,
    register_method,
    split_at_layer,
)
from maskwatch.explain.mass import cam_mass_shares, face_region_in_crop, mass_table, summarize_by_class

__all__ = [
    "CamExplainer",
    "CamResult",
    "available_methods",
    "cam_mass_shares",
    "explain_batch",
    "face_region_in_crop",
    "find_target_layer",
    "mass_table",
    "overlay",
    "register_method",
    "split_at_layer",
    "summarize_by_class",
]
