"""Known-truth data made in code, with fixed seeds: validation tools, not the pipeline.

* :mod:`.phantoms` - synthetic PVS inserted into real heads or the MNI template (the demo's
  and the built-in method's validation data);
* :mod:`.datasets` - small BIDS datasets and resampled copies of the shared real heads for
  tests, benchmarks and the container smoke test;
* :mod:`.cohort` - fake cohorts of derivatives for the group level's tests and benchmark.

Nothing in the participant or group pipeline imports this package; only ``mcpvs demo``
(which builds its dataset from :mod:`.phantoms`) and the tests do.
"""
