"""Nipype workflows: they only wire interfaces (one paper step, one interface)."""
