"""PVS segmentation methods and region schemes, each one file behind a registry."""
