"""Egress: the schema of the rendered egress config, host-side rendering and the bottle CA.

The host writes the config with :func:`bot_bottle.egress.render.render_egress_config`;
the egress sidecar parses the same file with :class:`bot_bottle.egress.config.EgressConfig`,
so the two can never disagree about its shape. The file holds no secret: tokens
reach the daemon only as environment variables named by each route's token slot.
:func:`bot_bottle.egress.from_manifest.egress_from_manifest` renders it from a
bottle's manifest (reading each ``auth.token_ref`` from the host environment).
"""
