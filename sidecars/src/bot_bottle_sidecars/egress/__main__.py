import sys

from bot_bottle_sidecars.egress.daemon import main

sys.exit(main())
