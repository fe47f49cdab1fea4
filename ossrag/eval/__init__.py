"""Measure: retrieval metrics on a question set (`retrieval`), answers compared across models
and efforts (`compare`), HTML reports (`report`)."""
