"""Images both the SCS-0102 checker and the bakery's audit judge. The checker's verdicts on them were taken once by
running it (tests/data/scs_checker_verdicts.json says which commit and how); tests/test_scs.py holds the audit to them."""

from __future__ import annotations

NOW = "2026-11-15T00:00:00Z"
GOOD = {"visibility": "public", "os_hidden": False, "status": "active", "architecture": "x86_64", "os_distro": "windows",
        "os_version": "10", "os_purpose": "generic", "hw_disk_bus": "virtio", "hypervisor_type": "qemu", "os_hash_algo": "sha512",
        "min_disk": 40, "min_ram": 2048, "size": 10 * 1024**3, "image_build_date": "2026-11-01", "created_at": "2026-11-02T10:00:00Z",
        "image_original_user": "Administrator", "image_source": "private", "image_description": "https://example.org/w10",
        "replace_frequency": "monthly", "provided_until": "2029-01-09", "uuid_validity": "last-3", "name": "windows 10"}


def img(id, **kw):
    return {"id": id, **GOOD, **kw}

CASES = {
    "conforming": [img("a")],
    "sata-bus": [img("a", hw_disk_bus="sata")],
    "no-os-purpose": [img("a", os_purpose=None)],
    "oldgeneric": [img("a", os_purpose="oldgeneric")],
    "md5-hash": [img("a", os_hash_algo="md5")],
    "min-disk-small": [img("a", min_disk=5)],
    "min-disk-unset": [img("a", min_disk=0)],
    "low-ram": [img("a", min_ram=32)],
    "build-after-registration": [img("a", image_build_date="2026-11-05")],
    "no-provided-until": [img("a", provided_until=None)],
    "bad-uuid-validity": [img("a", uuid_validity="sometimes")],
    "no-uuid-validity": [img("a", uuid_validity=None)],
    "bad-hotfix": [img("a", hotfix_hours="soon")],
    "bad-source": [img("a", image_source="somewhere")],
    "arch-i686": [img("a", architecture="i686")],
    "rng-other": [img("a", hw_rng_model="egd")],
    # recency: built 2026-09-01 monthly is outdated on 2026-11-15 (31 d x 1.1)
    "outdated-alone": [img("a", image_build_date="2026-09-01", created_at="2026-09-02T00:00:00Z")],
    "outdated-bakery-date-names": [img("a", name="windows 10 [2026-09-01]", image_build_date="2026-09-01", created_at="2026-09-02T00:00:00Z"),
                                   img("b", name="windows 10 [2026-11-01]")],
    "outdated-renamed-with-replacement": [img("a", name="windows 10 20260901", image_build_date="2026-09-01", created_at="2026-09-02T00:00:00Z"),
                                          img("b", name="windows 10", os_purpose="custom")],
    "outdated-plain-with-replacement": [img("a", name="windows 10 old", image_build_date="2026-09-01", created_at="2026-09-02T00:00:00Z"),
                                        img("b", name="windows 10", os_purpose="custom")],
    "outdated-past-provided-until": [img("a", image_build_date="2026-09-01", created_at="2026-09-02T00:00:00Z", provided_until="2026-10-01")],
    "outdated-bad-provided-until": [img("a", image_build_date="2026-09-01", created_at="2026-09-02T00:00:00Z", provided_until="later")],
    "two-public-generic": [img("a"), img("b", name="windows 10 v2")],
    "generic-and-community": [img("a"), img("b", name="windows 10 v2", visibility="community")],
}
