"""A plugin package whose hook module fails to import."""
