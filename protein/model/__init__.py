"""ReQFlow's frame denoiser: embedders, invariant point attention and the IPA trunk."""

from protein.model.ipa import InvariantPointAttention
from protein.model.trunk import IPATrunk, TrunkConfig

__all__ = ["IPATrunk", "InvariantPointAttention", "TrunkConfig"]
