from __future__ import annotations

import sys

from bot_bottle_sidecars.relay.relay import main

sys.exit(main())
