"""Tuning stage (see ../shared/GUIDE.md)."""
