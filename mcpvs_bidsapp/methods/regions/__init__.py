"""Region schemes: brain mask, BG/WM regions and ICV of one T1w (Samseg, atlas)."""
