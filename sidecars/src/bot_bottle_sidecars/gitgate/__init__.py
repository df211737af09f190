"""git-gate, the sidecar half: ``git daemon`` over one bare mirror per repo.

* :mod:`.daemon` — prepares the mirrors and runs ``git daemon``
  (``python -m bot_bottle_sidecars.gitgate``),
* :mod:`.hooks` — the access hook (refresh from upstream before every fetch,
  fail closed) and the pre-receive hook (scan, then forward over SSH),
* :mod:`.scan` — what a push brings, scanned with the DLP detectors,
* :mod:`.upstream` — ssh with a pinned host key, fetch, push,
* :mod:`.layout` — paths under the base directory and the hook scripts.

The plan (config, agent git config, known_hosts, keys) is core's
:mod:`bot_bottle.gitgate`.
"""
