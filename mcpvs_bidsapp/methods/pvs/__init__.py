"""PVS segmenters (the built-in method, nnU-Net models)."""
