"""Enrich: what the table alone does not say of a reported row (which way it goes, which process holds it)."""
