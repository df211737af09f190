"""init: the bundle's PID 1, supervising the daemons the plan selects.

python -m bot_bottle_sidecars.init --plan /etc/bot-bottle/init-plan.json
python -m bot_bottle_sidecars.init ctl status
python -m bot_bottle_sidecars.init ctl restart supervise
python -m bot_bottle_sidecars.init ctl reload        # = SIGHUP: egress reloads
"""

from bot_bottle_sidecars.init.plan import DaemonSpec, InitPlan, PlanError, load_plan, parse_plan
from bot_bottle_sidecars.init.supervisor import Supervisor, control_request

__all__ = [
    "DaemonSpec",
    "InitPlan",
    "PlanError",
    "Supervisor",
    "control_request",
    "load_plan",
    "parse_plan",
]
