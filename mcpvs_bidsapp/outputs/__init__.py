"""The output contract: what mcpvs writes, named once (spec), written once (write), read once
(read), with one vocabulary for the provenance its sidecars carry (provenance).

docs/outputs.md describes the same contract for users; the group level, the reports and
the tests read derivatives only through :mod:`.spec` and :mod:`.read`.
"""
