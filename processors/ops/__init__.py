"""Operator commands (DESIGN.md section 10): replay raw records, redrive dead letters."""
