"""The ImageQuotaPolicy resource: its vocabulary, pydantic models, the controller's remembered
state, CRD generation, validation messages and the quota documents. Imports nothing else of
meltguard."""
