"""The operator's side of supervision, headless.

``bot-bottle proposals``, ``bot-bottle egress`` and the console
(``bot-bottle supervise``) all call these functions; the console's widgets
only display what they return.

* :mod:`.bottles`: the bottles this home runs (state dirs and queues).
* :mod:`.proposals`: list, show, approve, reject (audit first, then effect).
* :mod:`.live_egress`: a running bottle's routes, changed without a restart.
* :mod:`.capabilities`: what an approved capability-block leaves behind.
"""
