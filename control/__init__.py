"""Crivline Edge."""
