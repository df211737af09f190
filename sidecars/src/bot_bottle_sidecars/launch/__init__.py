"""The launch-side kit: what a backend makes on the host for a bottle's sidecars.

Before the bundle starts, a backend generates the bottle CA egress
intercepts TLS with (:mod:`.ca`) and stages each git-gate repo's deploy key,
provisioning it through its key-provisioner plugin (:mod:`.keys`); at
teardown it revokes those keys; it writes the bundle's read-only
configuration directory with :mod:`.files`. All are the host half of the sidecars the
bundle runs, so they live with the bundle (next to :mod:`bot_bottle_sidecars.layout`,
which says where the bundle finds them), and every backend that runs the
bundle uses them the same way. Core does not: it plans, and its ``cleanup``
only revokes keys a gone launch recorded (:mod:`bot_bottle.gitgate.ledger`).
"""
