from bot_bottle.cli import entry

entry()
