"""Monitoring stage (see ../shared/GUIDE.md)."""
