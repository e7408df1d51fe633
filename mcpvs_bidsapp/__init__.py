"""mcpvs: a BIDS-App that segments and measures perivascular spaces on 3D T1w MRI."""

__version__ = "0.1.0"
__all__ = ["__version__"]
