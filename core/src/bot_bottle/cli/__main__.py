import sys

from bot_bottle.cli import main

sys.exit(main())
