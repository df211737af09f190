"""bot-bottle-testkit: test and benchmark kits shared by the workspace's tests.

Not a shipped distribution: the workspace's dev group installs it, nothing
the user installs depends on it, and the sidecar bundle image (built from
core, sidecars and the detector plugins) never carries it.
"""

__version__ = "0.1.0"
