"""The manifest models are importable without the plugin machinery."""

from __future__ import annotations

import subprocess
import sys


def test_models_import_no_plugin_machinery() -> None:
    code = (
        "import sys\n"
        "import bot_bottle.manifest\n"
        "print(','.join(m for m in ('pluggy', 'bot_bottle.plugins', 're2') if m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # re2 is imported only when a regex is checked, pluggy only when plugins are.
    assert r.stdout.strip() == ""
