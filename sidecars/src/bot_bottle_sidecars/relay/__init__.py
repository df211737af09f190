"""A byte relay between TCP and Unix-socket endpoints (asyncio, no dependencies).

The Docker backend gives the agent container no network at all (loopback
only). Its proxy, git and MCP endpoints reach the sidecar bundle through Unix
sockets in a per-bottle shared directory:

* in the bundle: ``unix:/run/bot-bottle/sock/proxy.sock=tcp:127.0.0.1:8080``
  (listen on the socket, forward to the daemon);
* in a relay container sharing only the agent's network namespace:
  ``tcp:127.0.0.1:8080=unix:/run/bot-bottle/sock/proxy.sock``.

    python -m bot_bottle_sidecars.relay [--ready-file PATH] [--wait-targets] LISTEN=TARGET...

``--wait-targets`` binds each listener only once its target accepts a
connection, so the ready file (written when every listener is bound) means
the whole path works.
"""
