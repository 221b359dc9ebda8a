"""gunicorn's entry point for the local Nova API.

Like Keystone's, Nova's configuration loader parses sys.argv and refuses gunicorn's options: they are
dropped before Nova is imported. The configuration comes from OS_NOVA_CONFIG_DIR (set by LocalNova, pipeline/glance/image_consumers.py).
"""

import sys

sys.argv = sys.argv[:1]

from nova.wsgi.osapi_compute import application  # noqa: E402,F401  (imported for gunicorn)
