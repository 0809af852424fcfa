"""Figures and reports, built from results (never imported by the library layers below it)."""
