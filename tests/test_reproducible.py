"""Reproducible rebuilds: bit-for-bit bakes, lock files, the stage cache, rebuild from a published image."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pytest
import yaml

from pipeline import chain
from pipeline.build.bake import refresh as bake_stage
from pipeline.common.digests import sha256_file
from pipeline.common.errors import BakeryError
from pipeline.common.report import Report
from pipeline.repro import lock as lockfile
from pipeline.repro import rebuild
from pipeline.repro.cache import StageCache
from pipeline.windows.registry import filetime
from tests.conftest import project_images
from tests.test_bake import spec
from tests.test_bake_chain import bake_manifest, site_element
from tests.test_cli import INVOKE, PROJECT_ROOT
from tests.windows_reader import OfflineWindows

EPOCH = int(dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc).timestamp())


def publish(manifest: Path, target, date: str = "2026-11-01", **options) -> Report:
    return chain.build_and_publish(chain.JobOptions(manifest, release_date=date, **options), Report("t"), target=target)


def locked_manifest(tmp_path, media, date="2026-11-01", **overrides) -> Path:
    manifest = bake_manifest(tmp_path, media, **overrides)
    chain.write_lock(chain.JobOptions(manifest, release_date=date), Report("lock"))
    return manifest


def test_two_bakes_of_the_same_inputs_are_bit_for_bit_identical(media, tmp_path):
    disk, _ = media.disk("w10", "qcow2")  # no virtio drivers yet: every driver file is new
    iso, _ = media.iso("0.1.240")
    first = bake_stage.bake(spec(iso), disk, iso, tmp_path / "one", build_epoch=EPOCH)
    time.sleep(1.1)  # a different wall clock: only the build epoch may reach the image
    second = bake_stage.bake(spec(iso), disk, iso, tmp_path / "two", build_epoch=EPOCH)
    assert sha256_file(first.raw) == sha256_file(second.raw)

    windows = OfflineWindows(first.raw)
    try:
        staged = windows.fs.mft.get("Windows/System32/drivers/viostor.sys")
        record_times = {_ntfs_seconds(ts) for ts in _standard_times(staged)}
        assert record_times == {EPOCH}, record_times
        system = windows.hive("SYSTEM")
        key = system.hive.get_key(f"\\{system.current_control_set()}\\Services\\viostor")
        assert key.header.last_modified == filetime(EPOCH)
    finally:
        windows.close()

    other = bake_stage.bake(spec(iso), disk, iso, tmp_path / "three", build_epoch=EPOCH + 86400)
    assert sha256_file(other.raw) != sha256_file(first.raw), "the build epoch is what the bake stamps"


def _standard_times(record) -> list:
    from dissect.ntfs.c_ntfs import ATTRIBUTE_TYPE_CODE

    info = record.attributes[ATTRIBUTE_TYPE_CODE.STANDARD_INFORMATION][0]
    names = [a for a in record.attributes[ATTRIBUTE_TYPE_CODE.FILE_NAME]]
    stamps = [info.creation_time_ns, info.last_modification_time_ns, info.last_change_time_ns, info.last_access_time_ns]
    for name in names:
        stamps += [name.creation_time_ns, name.last_modification_time_ns, name.last_change_time_ns, name.last_access_time_ns]
    return stamps


def _ntfs_seconds(ns: int) -> int:
    return ns // 1_000_000_000


def test_lock_pins_every_input_and_a_changed_one_is_refused(media, target, tmp_path):
    manifest = locked_manifest(tmp_path, media)
    lock = lockfile.load(lockfile.lock_path(manifest))
    pins = lock.pins
    assert pins["source"] == yaml.safe_load(manifest.read_text())["source"]["sha256"]
    assert {"bake.virtio_win", "elements/virtio-boot-drivers", "templates/properties.yaml.j2", "tools/ntfs-3g",
            "tools/libhivex0", "tools/qemu-utils", "tools/pipeline-source", "manifest"} <= set(pins)

    # a newer virtio-win in the manifest without a new lock: refused, naming the input and both hashes
    iso, iso_sha = media.iso("0.1.262")
    document = yaml.safe_load(manifest.read_text())
    old_sha = document["bake"]["virtio_win"]["sha256"]
    document["bake"]["virtio_win"] = {"path": str(iso), "sha256": iso_sha}
    manifest.write_text(yaml.safe_dump(document))
    with pytest.raises(BakeryError) as failure:
        publish(manifest, target)
    assert f"bake.virtio_win: the lock pins {old_sha}, this build has {iso_sha}" in failure.value.one_line()
    assert project_images(target) == []

    # a lock claiming another ntfs-3g: refused too (the bytes could differ)
    document["bake"]["virtio_win"]["sha256"] = old_sha
    document["bake"]["virtio_win"]["path"] = str(media.iso("0.1.240")[0])
    manifest.write_text(yaml.safe_dump(document))
    data = json.loads(lock.text)
    data["pins"]["tools/ntfs-3g"] = "1:2017.3.23-1"
    lock.path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    with pytest.raises(BakeryError, match="tools/ntfs-3g: the lock pins 1:2017.3.23-1, this build has "):
        publish(manifest, target)


@pytest.mark.slow
def test_unchanged_rerun_uses_the_cache_and_uploads_nothing_then_a_property_change_republishes(media, target, tmp_path):
    manifest = locked_manifest(tmp_path, media)
    first = publish(manifest, target)
    assert first.details["cache"] == {"build": "miss"} and "build" in first.timings
    props = first.image["properties"]
    assert props["bakery_lock_sha256"] == lockfile.load(lockfile.lock_path(manifest)).sha256
    assert props["bakery_build_stage"] == first.details["stages"]["build"]

    again = publish(manifest, target)
    assert again.details["cache"] == {"build": "hit"} and "build" not in again.timings
    assert again.details["measure"] == "cache", "the cached measurement must spare reading the image"
    assert again.image["id"] == first.image["id"] and again.image["uploaded"] is False
    assert len(project_images(target)) == 1

    # only a property changes: the bytes come from the cache, a new release is published, the old one demoted
    document = yaml.safe_load(manifest.read_text())
    document["image"]["min_ram"] = 8192
    manifest.write_text(yaml.safe_dump(document))
    chain.write_lock(chain.JobOptions(manifest, release_date="2026-11-01"), Report("lock"))
    changed = publish(manifest, target)
    assert changed.details["cache"] == {"build": "hit"} and "build" not in changed.timings
    assert changed.image["id"] != first.image["id"] and changed.image["checksum"] == first.image["checksum"]
    assert target.glance.images.get(changed.image["id"])["min_ram"] == 8192
    assert [d["id"] for d in changed.demoted] == [first.image["id"]]


@pytest.mark.slow
def test_a_new_virtio_win_invalidates_the_build_and_measure_stages(media, target, tmp_path):
    manifest = bake_manifest(tmp_path, media)
    first = publish(manifest, target)
    iso, iso_sha = media.iso("0.1.262")
    document = yaml.safe_load(manifest.read_text())
    document["bake"]["virtio_win"] = {"path": str(iso), "sha256": iso_sha}
    manifest.write_text(yaml.safe_dump(document))
    second = publish(manifest, target, "2026-12-01")
    assert second.details["cache"] == {"build": "miss"}
    assert second.details["stages"]["build"] != first.details["stages"]["build"]
    assert second.details["stages"]["measure"] != first.details["stages"]["measure"]
    assert second.image["properties"]["bakery_virtio_win_version"] == "0.1.262"
    cached = {(e.stage, e.id) for e in StageCache().entries()}
    assert ("build", first.details["stages"]["build"]) in cached, "the older output stays until evicted"


@pytest.mark.slow
def test_a_corrupt_cache_entry_is_dropped_rebuilt_and_never_published(media, target, tmp_path):
    manifest = bake_manifest(tmp_path, media)
    first = publish(manifest, target)
    cached = Path(first.built["path"])
    assert cached.parts[-4:-2] == ("cache", "build")
    with open(cached, "r+b") as image:  # one flipped byte inside the data: same size, different bytes
        image.seek(200 * 1024 * 1024 + 12345)
        byte = image.read(1)
        image.seek(-1, 1)
        image.write(bytes([byte[0] ^ 0xFF]))
    document = yaml.safe_load(manifest.read_text())
    document["image"]["min_ram"] = 8192  # forces an upload of the cached bytes
    manifest.write_text(yaml.safe_dump(document))

    second = publish(manifest, target)
    assert second.details["cache_dropped"]["entry"].startswith("build/")
    assert "no longer has the bytes recorded when it was built" in second.details["cache_dropped"]["reason"]
    assert second.image["checksum"] == first.image["checksum"], "the rebuilt, good bytes were published"
    checksums = {i["checksum"] for i in project_images(target)}
    assert checksums == {first.image["checksum"]}, "the corrupt upload was deleted"


def test_rebuild_from_the_published_image_is_bit_for_bit(media, target, tmp_path):
    manifest = locked_manifest(tmp_path, media)
    published = publish(manifest, target)
    report = rebuild.rebuild(Report("rebuild"), image_id=published.image["id"], target=target)
    result = report.details["rebuild"]
    assert result["compared"] == [{"image": published.image["id"], "reproduced": True, "build_stage_matches": True}]
    assert result["rebuilt"]["sha512"] == published.image["os_hash_value"]

    from_lock = rebuild.rebuild(Report("rebuild"), lock_file=lockfile.lock_path(manifest), target=target)
    assert [c["reproduced"] for c in from_lock.details["rebuild"]["compared"]] == [True]


def test_rebuild_says_where_an_unreproducible_step_changed_the_bytes(media, target, tmp_path):
    site = site_element(tmp_path, "site-random", "70-random", 'head -c 4096 /dev/urandom > "$BAKERY_WINDOWS_ROOT/Windows/seed.bin"')
    iso, iso_sha = media.iso("0.1.240")
    manifest = locked_manifest(tmp_path, media, bake={"virtio_win": {"path": str(iso), "sha256": iso_sha},
                                                      "elements": ["site-random"], "elements_path": [str(site)]})
    published = publish(manifest, target)
    with pytest.raises(BakeryError) as failure:
        rebuild.rebuild(report := Report("rebuild"), image_id=published.image["id"], target=target)
    line = failure.value.one_line()
    assert "not reproduced" in line and "build (bake/convert) stage" in line and "(partition 2, +" in line
    [comparison] = report.details["rebuild"]["compared"]
    assert comparison["reproduced"] is False and comparison["differences"]


def test_an_image_without_a_lock_cannot_be_rebuilt(media, target, tmp_path):
    published = publish(bake_manifest(tmp_path, media), target)
    with pytest.raises(BakeryError, match="records no bakery_lock_sha256"):
        rebuild.rebuild(Report("rebuild"), image_id=published.image["id"], target=target)


def test_cache_evicts_least_recently_used_and_drops_broken_entries(tmp_path):
    cache = StageCache(tmp_path / "cache", limit=5 * 2**20)
    for name in ("a", "b", "c"):
        data = tmp_path / f"{name}.bin"
        data.write_bytes(name.encode() * 2 * 2**20)
        cache.put("build", name * 64, {"image.raw": data}, {})
        time.sleep(0.01)
    assert {e.id[0] for e in cache.entries()} == {"b", "c"}, "a was least recently used"
    time.sleep(0.01)
    assert cache.get("build", "b" * 64) is not None  # b is now more recent than c
    data = tmp_path / "d.bin"
    data.write_bytes(b"d" * 2 * 2**20)
    cache.put("build", "d" * 64, {"image.raw": data}, {})
    assert {e.id[0] for e in cache.entries()} == {"b", "d"}
    with open(cache.root / "build" / ("d" * 64) / "image.raw", "ab") as image:
        image.write(b"grown")
    assert cache.get("build", "d" * 64) is None and not (cache.root / "build" / ("d" * 64)).exists()


def test_cache_ls_and_gc_from_the_command_line(media, target, tmp_path, isolated_state):
    import subprocess

    publish(bake_manifest(tmp_path, media), target)
    env = {"BAKERY_STATE_DIR": str(isolated_state), "PATH": "/usr/bin:/bin"}
    listed = subprocess.run([INVOKE, "cache-ls", "--json", str(tmp_path / "ls.json")], cwd=PROJECT_ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    entries = json.loads((tmp_path / "ls.json").read_text())["details"]["cache"]["entries"]
    assert {e["stage"] for e in entries} == {"build", "measure", "sbom"} and "build " in listed.stdout
    emptied = subprocess.run([INVOKE, "cache-gc", "--all"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert emptied.returncode == 0 and "0 entries" in emptied.stdout, emptied.stdout + emptied.stderr


@pytest.mark.slow
def test_next_month_with_unchanged_inputs_does_not_bake_again(media, target, tmp_path):
    manifest = bake_manifest(tmp_path, media)
    october = publish(manifest, target, "2026-10-01")
    assert october.built["bake"]["build_epoch"].startswith("2023-07-11"), "default epoch: virtio-win 0.1.240's newest DriverVer"
    november = publish(manifest, target, "2026-11-01")
    assert november.details["cache"] == {"build": "hit"} and "build" not in november.timings
    assert november.image["checksum"] == october.image["checksum"] and november.image["id"] != october.image["id"]
    assert [d["id"] for d in november.demoted] == [october.image["id"]]


def test_bake_epoch_from_the_manifest_is_what_gets_stamped(media, target, tmp_path):
    iso, iso_sha = media.iso("0.1.240")
    manifest = bake_manifest(tmp_path, media, bake={"virtio_win": {"path": str(iso), "sha256": iso_sha}, "epoch": "2026-01-15"})
    report = publish(manifest, target)
    assert report.built["bake"]["build_epoch"].startswith("2026-01-15")
    windows = OfflineWindows(Path(report.built["path"]))
    try:
        stamps = _standard_times(windows.fs.mft.get("Windows/System32/drivers/viostor.sys"))
    finally:
        windows.close()
    expected = int(dt.datetime(2026, 1, 15, tzinfo=dt.timezone.utc).timestamp())
    assert {_ntfs_seconds(s) for s in stamps[1:3]} == {expected}  # modified and changed by the bake
