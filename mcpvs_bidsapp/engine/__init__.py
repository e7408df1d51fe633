"""How workflows run: resources per node, the Nipype plugin and its settings, SLURM helpers."""
