"""What is in an image and what changed since last month: the SBOM read offline from the image, release notes
against the family's previous release, the canary's picture of the boot, and the family's page.

The SBOM is checked against an independent read of the same image (dissect.ntfs and regipy, not the hivex and
ntfs-3g the bakery reads with) and against CycloneDX's schema; the notes are checked as a reader would see
them, hostile registry text included.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import yaml

from pipeline import chain
from pipeline.common.errors import BakeryError
from pipeline.common.report import Report
from tests.browser import pixels_near, render, shows_picture
from tests.conftest import one_line_error, run_invoke

PNG = b"\x89PNG\r\n\x1a\n"
ADDED, REMOVED, CHANGED = (0x11, 0x66, 0x11), (0xAA, 0x11, 0x11), (0x88, 0x55, 0x00)  # templates/notes/_style.html.j2


def software_of(image: Path, workdir: Path):
    from pipeline.windows.inspection import windows_volume
    from pipeline.windows.software import read_software

    with windows_volume(image, "raw", workdir, writable=False) as found:
        return read_software(found)


def sbom_of(software, **overrides):
    from pipeline.sbom import build_sbom

    arguments = {"image_name": "Windows 10 [2026-12-01]", "release_date": "2026-12-01", "build_id": "a" * 64,
                 "build_stage": "b" * 64, "pins": {"source": "c" * 64, "tools/qemu-utils": "1:7.2"}, "tools": {"pipeline": "0.1"}}
    return build_sbom(software, **{**arguments, **overrides})


def test_the_sbom_lists_what_an_independent_reader_finds_in_the_image(media, tmp_path):
    from tests.windows_reader import OfflineWindows

    image, _ = media.disk("w10-oldvirtio")
    software = software_of(image, tmp_path / "w")
    document = sbom_of(software).data

    offline = OfflineWindows(image)
    try:
        registry = offline.hive("SOFTWARE")
        current = registry.values(r"Microsoft\Windows NT\CurrentVersion")
        cbs = r"Microsoft\Windows\CurrentVersion\Component Based Servicing\Packages"
        installed = {name for name in registry.subkeys(cbs) if registry.values(rf"{cbs}\{name}").get("CurrentState") in (0x70, 0x80)}
        store = [name for name in offline.listdir(r"Windows\System32\DriverStore\FileRepository")]
        uninstall = r"Microsoft\Windows\CurrentVersion\Uninstall"
        programs = {registry.values(rf"{uninstall}\{k}").get("DisplayName") for k in registry.subkeys(uninstall)}
    finally:
        offline.close()

    system = next(c for c in document["components"] if c["type"] == "operating-system")
    assert system["version"] == f"10.0.{current['CurrentBuildNumber']}.{current['UBR']}" == "10.0.19045.3803"
    kbs = {u["name"] for u in system["components"]}
    assert kbs == {m.group(0) for p in installed if (m := re.search(r"KB\d+", p))} | {"Package_for_RollupFix"}
    assert "KB5032189" not in kbs  # superseded (0x50): not on this Windows any more
    folders = {p["value"] for c in document["components"] if c["type"] == "device-driver" for p in c["properties"]
               if p["name"] == "bakery:folder"}
    assert folders == set(store) and len(store) == 4
    disk = next(c for c in document["components"] if c["name"] == "disk.inf")  # Windows' own INFs are UTF-16
    assert (disk["version"], disk["publisher"]) == ("10.0.19045.1", "Microsoft")
    viostor = next(c for c in document["components"] if c["name"] == "viostor.inf")
    assert (viostor["version"], viostor["publisher"]) == ("100.57.104.17300", "Red Hat, Inc.")
    assert {c["name"] for c in document["components"] if c["type"] == "application"} == programs
    inputs = [c for c in document["components"] if c["type"] == "file"]
    assert [(c["name"], c["hashes"][0]["content"]) for c in inputs] == [("source", "c" * 64)]  # tool versions are tools, not files


def test_the_sbom_is_deterministic_and_valid_cyclonedx_and_a_damaged_one_is_refused(media, tmp_path):
    from pipeline.sbom import load_sbom
    from pipeline.sbom.document import validate

    image, _ = media.disk("w10")
    software = software_of(image, tmp_path / "w")
    first, second = sbom_of(software), sbom_of(software_of(image, tmp_path / "w2"))
    assert first.text == second.text and first.sha256 == hashlib.sha256(first.text.encode()).hexdigest()
    assert sbom_of(software, release_date="2026-12-02").sha256 != first.sha256  # the content address moves with the content
    data = first.data
    assert (data["bomFormat"], data["specVersion"]) == ("CycloneDX", "1.6") and data["metadata"]["timestamp"].startswith("2026-12-01")

    broken = json.loads(first.text)
    broken["components"][0]["type"] = "not-a-type"
    with pytest.raises(BakeryError, match="not valid CycloneDX"):
        validate(json.dumps(broken), label="x")
    path = tmp_path / "sbom.json"
    path.write_text(first.text.replace("Microsoft", "Microsoft ", 1))
    with pytest.raises(BakeryError, match="was expected"):
        load_sbom(path, expected_sha256=first.sha256)


def test_hostile_registry_text_is_inert_in_markdown_and_html(media, tmp_path):
    """A program's name is whatever the image's registry says: it must not become markup, a link or a script."""
    import shutil

    from pipeline.notes import ReleaseNotes, ReleaseSide, write_notes
    from pipeline.windows.registry import REG_SZ, Hive

    image, _ = media.disk("w10")
    copy = tmp_path / "hostile.raw"
    shutil.copyfile(image, copy)
    from pipeline.windows.inspection import windows_volume

    hostile = '<script>alert(1)</script> | ![x](http://evil/) [link](javascript:alert(1)) `code`\n# heading'
    with windows_volume(copy, "raw", tmp_path / "m", writable=True) as found:
        with Hive(found.software_hive, write=True) as software:
            software.set(r"Microsoft\Windows\CurrentVersion\Uninstall\Evil", "DisplayName", hostile, REG_SZ)
            software.set(r"Microsoft\Windows\CurrentVersion\Uninstall\Evil", "DisplayVersion", "1.0<img src=x onerror=alert(1)>", REG_SZ)
    sbom = sbom_of(software_of(copy, tmp_path / "r"))
    new = ReleaseSide(name="w10 <b>bold</b>", release_date="2026-12-01", properties={"os_type": "windows", "note": "<i>x</i>"},
                      sbom=sbom, sbom_source="artifact")
    folder = write_notes(ReleaseNotes(family="w10entx64", new=new, previous=None), tmp_path / "out")

    markdown = (folder / "notes.md").read_text()
    html = (folder / "notes.html").read_text()
    assert "<script>" not in markdown and "<img" not in markdown and "[link](javascript" not in markdown and "<b>" not in markdown
    assert not any(line.startswith("# heading") for line in markdown.splitlines()) and "\\# heading" in markdown
    assert all(line.count("|") - line.count("\\|") == 6 for line in markdown.splitlines() if line.startswith("| program"))
    assert "<script>" not in html and "<img src=x" not in html and "<b>bold" not in html and "<i>x" not in html
    assert "&lt;script&gt;" in html and "href=\"javascript" not in html

    # and as a reader's browser shows it: no script ran, no element was injected, the text is on the screen
    shown = render(folder / "notes.html", ("tr.added",), tmp_path)
    assert shown.dialogs == [] and shown.images == [] and shown.title == "w10 <b>bold</b> (2026-12-01)"
    rows = shown.boxes["tr.added"]
    assert len(rows) == 7 and all(pixels_near(shown.crop(r), ADDED) > 20 for r in rows)  # seven rows, each drawn green


def _manifest(tmp_path: Path, disk: tuple[Path, str], virtio: tuple[Path, str], name: str) -> Path:
    path, sha = disk
    document = {
        "name": "Windows 10 notes [{{ release_date }}]",
        "family": {"os_distro": "windows", "architecture": "x86_64", "os_distro_major": "w10notes", "os_edition": "DESKTOP"},
        "os": {"type": "windows", "version": "10"},
        "source": {"path": str(path), "sha256": sha, "format": "raw"},
        "image": {"visibility": "private"},
        "properties": {"hw_disk_bus": "virtio", "hw_qemu_guest_agent": "yes"},
        "bake": {"virtio_win": {"path": str(virtio[0]), "sha256": virtio[1]}},
        "canary": {"timeout_minutes": 3, "tcg_timeout_factor": 1, "memory_mib": 512, "cpus": 1},
    }
    manifest = tmp_path / f"{name}.yaml"
    manifest.write_text(yaml.safe_dump(document, sort_keys=False))
    return manifest


def next_month(disk: tuple[Path, str], tmp_path: Path) -> tuple[Path, str]:
    """The base image a month later: one more update installed, one program installed and one removed."""
    import subprocess

    from pipeline.common.digests import sha256_file
    from pipeline.synthetic.windows_disk import HEALTH_TOOLS_CODE
    from pipeline.windows.inspection import windows_volume
    from pipeline.windows.registry import REG_DWORD, REG_SZ, Hive
    from pipeline.windows.software import CBS_PACKAGES, UNINSTALL_KEYS

    copy = tmp_path / "december-base.raw"
    subprocess.run(["cp", "--sparse=always", str(disk[0]), str(copy)], check=True)
    with windows_volume(copy, "raw", tmp_path / "edit", writable=True) as found:
        with Hive(found.software_hive, write=True) as software:
            software.set(rf"{CBS_PACKAGES}\{NEW_UPDATE}~31bf3856ad364e35~amd64~~19041.3920.1.2", "CurrentState", 0x70, REG_DWORD)
            software.set_many(rf"{UNINSTALL_KEYS['64-bit']}\{{5D3F1B2A-0C4E-4F6A-9B1D-2E3C4A5B6C7D}}", {
                "DisplayName": (NEW_PROGRAM, REG_SZ), "DisplayVersion": ("1.1.6.0", REG_SZ),
                "Publisher": ("Cloudbase Solutions Srl", REG_SZ), "WindowsInstaller": (1, REG_DWORD)})
            software.delete(rf"{UNINSTALL_KEYS['64-bit']}\{HEALTH_TOOLS_CODE}")
    return copy, sha256_file(copy)


NEW_UPDATE = "Package_for_KB5034441"
NEW_PROGRAM = "Cloudbase-Init 1.1.6"


@pytest.mark.slow
def test_monthly_release_notes_show_the_driver_update_the_boot_and_the_family(bootable, media, target, tmp_path):
    """November (virtio-win 0.1.240) is published; December (0.1.262) is baked: its notes, made from its artifact
    and the cloud, show the drivers' old -> new versions, the picture of its boot, and the family's page."""
    november = _manifest(tmp_path, bootable("w10"), media.iso("0.1.240"), "november")
    published = chain.build_and_publish(chain.JobOptions(november, release_date="2026-11-03"), Report("t"), target=target)
    stored = target.glance.images.get(published.image["id"])
    sbom_sha = stored["bakery_sbom_sha256"]
    assert re.fullmatch(r"[0-9a-f]{64}", sbom_sha) and published.details["sbom"]["sha256"] == sbom_sha

    december = _manifest(tmp_path, next_month(bootable("w10"), tmp_path), media.iso("0.1.262"), "december")
    baked = chain.bake(chain.JobOptions(december, release_date="2026-12-01"), Report("t"), out=tmp_path / "artifact")
    artifact = tmp_path / "artifact"
    record = json.loads((artifact / "record.json").read_text())
    assert hashlib.sha256((artifact / "sbom.cdx.json").read_bytes()).hexdigest() == record["sbom"]["sha256"] \
        == record["properties"]["bakery_sbom_sha256"]
    picture = (artifact / "boot.png").read_bytes()
    assert picture.startswith(PNG) and record["canary"]["picture_sha256"] == hashlib.sha256(picture).hexdigest()
    assert "virtio" in record["canary"]["machine"] and baked.details["canary"]["picture"]

    out = tmp_path / "site"
    report = chain.release_notes(Report("t"), out=out, artifact_dir=artifact, target=target)
    notes = report.details["release_notes"]
    assert notes["previous"]["image_id"] == published.image["id"] and notes["previous"]["sbom_source"] == "local store"
    changes = {(c["kind"], c["name"]): c for c in notes["changes"]}
    viostor = changes[("driver", "viostor.inf")]
    assert viostor["action"] == "changed" and "0.1.240" not in viostor["new"]  # versions, not ISO names
    assert viostor["old"] != viostor["new"]
    assert ("input", "bake.virtio_win") in changes and ("windows", "Windows 10 Enterprise") not in changes
    assert changes[("update", "KB5034441")]["action"] == "added" and changes[("update", "KB5034441")]["new"] == "19041.3920.1.2"
    assert changes[("program", NEW_PROGRAM)]["action"] == "added" and changes[("program", NEW_PROGRAM)]["new"] == "1.1.6.0"
    removed = changes[("program", "Microsoft Update Health Tools")]
    assert removed["action"] == "removed" and removed["old"] == "3.74.0.0"
    assert ("update", "KB5033372") not in changes  # still installed, same version
    sbom = json.loads((artifact / "sbom.cdx.json").read_text())  # against what the December disk holds
    system = next(c for c in sbom["components"] if c["type"] == "operating-system")
    assert {u["name"] for u in system["components"]} == {"KB5033372", "KB5034441", "Package_for_RollupFix"}
    assert {c["name"] for c in sbom["components"] if c["type"] == "application" and "staged" not in json.dumps(c)} == {NEW_PROGRAM}
    props = {p["property"]: p for p in notes["property_changes"]}
    assert props["bakery_virtio_win_version"]["old"] == "0.1.240" and props["bakery_virtio_win_version"]["new"] == "0.1.262"
    assert props["release_date"]["new"] == "2026-12-01"

    folder = Path(notes["folder"])
    markdown = (folder / "notes.md").read_text()
    assert "viostor.inf" in markdown and "0.1.240" in markdown and "Canary:" in markdown
    html = (folder / "notes.html").read_text()
    assert '<img src="boot.png"' in html and (folder / "boot.png").read_bytes() == picture
    assert (folder / "sbom.cdx.json").read_bytes() == (artifact / "sbom.cdx.json").read_bytes()
    page = (out / "w10notes" / "index.html").read_text()
    assert page.index("2026-12-01") < page.index("2026-11-03")  # newest first
    assert "recommended" in page and f'href="{folder.name}/notes.html"' in page and 'name="viewport"' in page

    # what a reader's (phone-sized) browser shows: the boot picture itself, and the change rows in their colours
    shown = render(folder / "notes.html", ("img", "tr.changed", "tr.added", "tr.removed"), tmp_path)
    from PIL import Image

    assert shown.images == [{"src": "boot.png", "naturalWidth": Image.open(folder / "boot.png").width, "complete": True}]
    assert shows_picture(shown, shown.boxes["img"][0], folder / "boot.png")
    for selector, colour in (("tr.changed", CHANGED), ("tr.added", ADDED), ("tr.removed", REMOVED)):
        assert shown.boxes[selector] and all(pixels_near(shown.crop(b), colour) > 20 for b in shown.boxes[selector]), selector
    assert len(shown.boxes["tr.removed"]) == 1 and len(shown.boxes["tr.added"]) == 2  # the program gone; an update, a program new
    family = render(out / "w10notes" / "index.html", ("section", "section img"), tmp_path)
    december_box, november_box = family.boxes["section"]
    assert december_box["y"] < november_box["y"] and shows_picture(family, family.boxes["section img"][0], folder / "boot.png")

    # without this machine's SBOM store, the previous release is read again from its bytes, and the notes say so
    for stored_sbom in (tmp_path / "state" / "sboms").glob("*.cdx.json"):
        stored_sbom.unlink()
    again = chain.release_notes(Report("t"), out=tmp_path / "again", artifact_dir=artifact, target=target).details["release_notes"]
    assert again["previous"]["sbom_source"] == "read again from the image's bytes"
    assert any("read again from its bytes" in n for n in again["notes"])
    assert again["previous"]["sbom_sha256"] != sbom_sha  # its pins are unknown now: a different document, the same components
    assert {(c["kind"], c["name"]) for c in again["changes"] if c["kind"] != "input"} == \
        {k for k in changes if k[0] != "input"}

    # two artifacts, from the command line, no cloud at all
    chain.bake(chain.JobOptions(november, release_date="2026-11-03"), Report("t"), out=tmp_path / "november")
    proc = run_invoke("release-notes", "--artifact", str(artifact), "--previous-artifact", str(tmp_path / "november"),
                      "--out", str(tmp_path / "cli-site"), "--json", str(tmp_path / "notes.json"), state=tmp_path / "state",
                      env={"BAKERY_GLANCE_PORT": "1"})
    assert proc.returncode == 0, proc.stderr
    from_cli = json.loads((tmp_path / "notes.json").read_text())["details"]["release_notes"]
    assert from_cli["changes"] == notes["changes"] and from_cli["previous"]["sbom_source"] == "artifact"
    assert (tmp_path / "cli-site" / "w10notes" / "index.html").is_file()
    assert not (tmp_path / "state" / "glance").exists(), "two artifacts need no cloud (port 1 is bindable as root)"


def test_release_notes_need_one_release(tmp_path):
    proc = run_invoke("release-notes", "--out", str(tmp_path / "o"), state=tmp_path / "state", env={"BAKERY_GLANCE_PORT": "1"})
    one_line_error(proc, "--artifact DIR", "--image ID")
    assert not (tmp_path / "state" / "glance").exists()


def test_an_artifact_carries_its_sbom_and_publish_refuses_one_changed_after_the_bake(media, glance_server, tmp_path):
    """The SBOM travels with the bytes: the artifact holds it, the record its sha256, the published image the
    same sha256; an SBOM edited in the artifact is refused before anything is uploaded."""
    from pipeline.glance.connect import connect_local
    from tests.conftest import project_images, write_manifest

    disk, sha = media.disk("w10")
    iso, iso_sha = media.iso("0.1.240")
    manifest = write_manifest(tmp_path, disk, sha, family={"os_distro_major": f"w10sbom{tmp_path.name[-8:]}"},
                              bake={"virtio_win": {"path": str(iso), "sha256": iso_sha}})
    out = tmp_path / "artifact"
    proc = run_invoke("bake", "--manifest", str(manifest), "--out", str(out), "--release-date", "2026-12-01",
                      state=tmp_path / "state", env={"BAKERY_GLANCE_PORT": "1"})
    assert proc.returncode == 0, proc.stderr
    record = json.loads((out / "record.json").read_text())
    sbom = (out / "sbom.cdx.json").read_bytes()
    assert record["sbom"] == {"file": "sbom.cdx.json", "sha256": hashlib.sha256(sbom).hexdigest()}
    assert record["properties"]["bakery_sbom_sha256"] == record["sbom"]["sha256"]

    publish = ("publish", "--artifact", str(out))
    env = {"BAKERY_GLANCE_PORT": str(glance_server.port)}
    target = connect_local(glance_server, start=False)
    before = {i["id"] for i in project_images(target)}
    (out / "sbom.cdx.json").write_bytes(sbom.replace(b"Microsoft", b"Microsoft ", 1))
    one_line_error(run_invoke(*publish, state=glance_server.root.parent, env=env), "sbom.cdx.json", "was expected")
    assert {i["id"] for i in project_images(target)} == before  # nothing uploaded
    (out / "sbom.cdx.json").write_bytes(sbom)
    report = tmp_path / "publish.json"
    proc = run_invoke(*publish, "--json", str(report), state=glance_server.root.parent, env=env)
    assert proc.returncode == 0, proc.stderr
    image = target.glance.images.get(json.loads(report.read_text())["image"]["id"])
    try:
        assert image["bakery_sbom_sha256"] == hashlib.sha256(sbom).hexdigest()
    finally:
        target.glance.images.delete(image["id"])
