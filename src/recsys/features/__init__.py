"""Features stage (see ../shared/GUIDE.md)."""
