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

``--down LISTEN=http:DAEMON`` (or ``git:DAEMON``): when that listener's
target refuses (its daemon is restarting after a crash, or init gave up on
it), the client gets an answer instead of a bare reset: an HTTP ``503`` whose
body names the sidecar and says it is restarting (or has failed, when the
``--status`` file init keeps says so), or a git ``ERR`` packet. It fails
closed: nothing else is tried. Refusals are logged once per target and
reason per 10 s with a count, not once per connection (an agent retrying in
a loop must not flood the log).
"""
