"""Fails on import, the way a plugin with a missing dependency would."""

raise RuntimeError("example plugin is broken on purpose: missing libacme.so")
