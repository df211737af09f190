"""Example bot-bottle plugin package."""
