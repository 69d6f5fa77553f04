"""Serving stage (see ../shared/GUIDE.md)."""
