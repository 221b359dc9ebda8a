"""gunicorn's entry point for the local Keystone.

Keystone's configuration loader parses sys.argv, and under gunicorn those are gunicorn's own options, which
it refuses: they are dropped before Keystone is imported. The config file comes from
OS_KEYSTONE_CONFIG_FILES (set by LocalKeystone).
"""

import sys

sys.argv = sys.argv[:1]

from keystone.wsgi.api import application  # noqa: E402,F401  (imported for gunicorn)
