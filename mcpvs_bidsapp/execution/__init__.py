"""A participant-level run: preflight checks, the workflow, the status of every T1w."""
