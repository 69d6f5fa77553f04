"""Decision stage (see ../shared/GUIDE.md)."""
