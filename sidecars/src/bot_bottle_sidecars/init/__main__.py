import sys

from bot_bottle_sidecars.init.cli import main

sys.exit(main())
