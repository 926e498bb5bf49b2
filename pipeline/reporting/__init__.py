"""Reporting: per-seed metrics, the results table and the figures."""
