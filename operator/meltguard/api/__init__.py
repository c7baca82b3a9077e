"""The ImageQuotaPolicy resource: pydantic models, CRD generation and validation messages."""
