"""gunicorn's entry point for the local Cinder API.

Cinder's WSGI application parses sys.argv for its options: gunicorn's are replaced by the config file
LocalCinder names in BAKERY_CINDER_CONF.
"""

import os
import sys

sys.argv = [sys.argv[0], "--config-file", os.environ["BAKERY_CINDER_CONF"]]

from cinder.wsgi.api import application  # noqa: E402,F401  (imported for gunicorn)
