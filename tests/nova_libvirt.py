"""The domain XML the real Nova libvirt driver generates for an image's properties, for comparing with explain.

Runs nova's own driver (the nova package from PyPI, the version installed in the venv) with the fake libvirt
its unit tests use: `_get_guest_config` for a test instance whose os_type is copied from the image, as Nova's
compute API does when a server is created. In a fresh interpreter per call (`render`), because nova's test
fixtures patch process-wide state. Needs nova's test requirements (oslotest, ddt, testscenarios,
requests-mock, wsgi-intercept), which the test extra of pyproject installs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import unittest


def render(properties: dict, *, timeout: float = 300) -> str:
    proc = subprocess.run([sys.executable, "-m", "tests.nova_libvirt", json.dumps(properties)], capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0 or "<domain" not in proc.stdout:
        raise RuntimeError(f"nova did not render a domain: {proc.stdout[-2000:]} {proc.stderr[-3000:]}")
    return proc.stdout[proc.stdout.index("<domain"):]


VTPM_SECRET = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"


def _main(properties: dict) -> int:
    from nova import objects
    from nova.tests.unit.virt.libvirt import test_driver
    from nova.virt.libvirt import blockinfo
    from nova.virt.libvirt import driver as libvirt_driver

    rendered = {}

    class RealNova(test_driver.LibvirtConnTestCase):
        def test_render(self):
            driver = libvirt_driver.LibvirtDriver(test_driver.fake.FakeVirtAPI(), True)
            instance = objects.Instance(**self.test_instance)
            instance.os_type = properties.get("os_type")  # the compute API copies it from the image at boot
            # the vTPM's secret, which spawn creates in the host's secret store before it builds the config
            instance.system_metadata = {**instance.system_metadata, "vtpm_secret_uuid": VTPM_SECRET}
            image_meta = objects.ImageMeta.from_dict({"disk_format": "raw", "properties": properties})
            disk_info = blockinfo.get_disk_info("kvm", instance, image_meta)
            config = driver._get_guest_config(instance, test_driver._fake_network_info(self), image_meta, disk_info)
            rendered["xml"] = config.to_xml()

    result = unittest.TextTestRunner(stream=sys.stderr, verbosity=0).run(unittest.TestSuite([RealNova("test_render")]))
    if not result.wasSuccessful():
        return 1
    print(rendered["xml"])
    return 0


if __name__ == "__main__":
    sys.exit(_main(json.loads(sys.argv[1])))
