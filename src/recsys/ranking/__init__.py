"""Ranking stage (see ../shared/GUIDE.md)."""
