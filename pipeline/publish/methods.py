"""How the bytes get to one cloud: the direct upload, Glance's interoperable import, and the choice between them.

Clouds differ. Some allow only the import API, some have several stores and expect `stores`/`all_stores`,
some convert a staged qcow2 to raw on import (the image_conversion plugin). What a cloud offers is read
(capabilities.py); whether it converts is learnt the only honest way there is, by importing a 1 MiB qcow2
once and looking at what Glance stored (remembered per target for a day). Whatever the route, the server's
checksum, os_hash_value and size after the import must equal those of the raw image the bake produced.
The probe writes to the cloud, so only a real run (or `invoke probe`) makes it; plan reads the memo or says
"not probed yet".
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from glanceclient import exc as glance_exc

from pipeline.common.errors import BakeryError
from pipeline.common.files import write_atomically
from pipeline.common.paths import state_dir
from pipeline.common.progress import progress, say
from pipeline.common.run import run
from pipeline.glance.capabilities import Capabilities, discover
from pipeline.glance.connect import Target
from pipeline.glance.images import STATE_KEY
from pipeline.manifest import UploadSpec
from pipeline.publish.lease import lease_properties
from pipeline.publish.measure import HashingReader, Measurement, measure_file
from pipeline.publish.staging import stage_qcow2

PROBE_TTL = dt.timedelta(days=1)
IMPORT_POLL_S = (0.5, 5.0)
IMPORT_RATE = 5 * 1024 * 1024  # bytes/s a server-side import is given, plus IMPORT_GRACE, before the bakery gives up
IMPORT_GRACE_S = 600


@dataclass(frozen=True)
class Route:
    method: str  # direct | glance-direct | web-download
    stage_format: str  # raw | qcow2: what is sent (or fetched); the stored image is always raw
    stores: tuple[str, ...]  # () = the default store
    all_stores: bool
    all_stores_must_succeed: bool
    url: str | None
    why: str

    @property
    def imports(self) -> bool:
        return self.method != "direct"

    def to_dict(self) -> dict:
        return {**asdict(self), "stores": list(self.stores)}


def route(target: Target, spec: UploadSpec, *, caps: Capabilities | None = None, probe: bool = True) -> Route:
    """The method and stores for this target, and why; a one-line error when the cloud cannot do what is asked.
    probe=False (plan): nothing is written to the cloud; what is not known yet is said, not learnt."""
    caps = caps or discover(target)
    _check_stores(target, spec, caps)
    several = spec.all_stores or len(spec.stores) > 1
    offered = ("direct", *caps.import_methods)
    if spec.method not in ("auto", *offered):
        raise BakeryError(f"{target.name}: upload.method {spec.method} is not offered (it offers {', '.join(offered)})",
                          hint="choose one it offers, or method: auto")
    stage = spec.stage_format
    if spec.method in ("auto", "glance-direct") and stage in ("auto", "qcow2") and "glance-direct" in caps.import_methods:
        converts = converts_qcow2(target, caps, probe=probe)
        if converts is None:
            method, why = _method(target, spec, caps, "raw", several)
            return Route(method, stage, spec.stores, spec.all_stores, spec.all_stores_must_succeed, spec.web_download_url,
                         f"{why}; not probed yet: whether this cloud converts a staged qcow2 (then glance-direct with a qcow2) "
                         "is learnt by the first real run, or by `invoke probe`")
        if stage == "qcow2" and not converts:
            raise BakeryError(f"{target.name}: upload.stage_format qcow2, but this cloud's import stores a staged qcow2 as "
                              "qcow2 (no image_conversion plugin)", hint="use stage_format: raw or auto")
        stage = "qcow2" if converts else "raw"
    elif stage in ("auto", "qcow2"):
        if stage == "qcow2":
            raise BakeryError(f"{target.name}: upload.stage_format qcow2 needs glance-direct, which "
                              f"{'is not offered' if 'glance-direct' not in caps.import_methods else 'is not the method chosen'}")
        stage = "raw"
    method, why = _method(target, spec, caps, stage, several)
    return Route(method, stage, spec.stores, spec.all_stores, spec.all_stores_must_succeed, spec.web_download_url, why)


def _method(target: Target, spec: UploadSpec, caps: Capabilities, stage: str, several: bool) -> tuple[str, str]:
    if spec.method == "direct":
        if several:
            raise BakeryError(f"{target.name}: a direct upload goes to one store; several stores need method glance-direct "
                              "or auto")
        return "direct", "asked for: one PUT of the raw image"
    if spec.method in ("glance-direct", "web-download"):
        return spec.method, f"asked for: {spec.method}" + (", staging a qcow2 the cloud converts" if stage == "qcow2" else "")
    if stage == "qcow2":
        return "glance-direct", "the cloud converts a staged qcow2 on import: only the image's data goes over the wire"
    if several:
        if "glance-direct" not in caps.import_methods:
            raise BakeryError(f"{target.name}: several stores need the import API, and this cloud does not offer glance-direct")
        return "glance-direct", "several stores: the import writes each"
    return "direct", "direct upload: one PUT, no staging"


def _check_stores(target: Target, spec: UploadSpec, caps: Capabilities) -> None:
    if (spec.stores or spec.all_stores) and not caps.stores:
        raise BakeryError(f"{target.name}: upload.stores given, but this Glance has a single store (no multi-store backends)")
    unknown = [s for s in spec.stores if s not in caps.stores]
    if unknown:
        raise BakeryError(f"{target.name}: upload.stores: {', '.join(unknown)} unknown; the cloud's stores are {', '.join(caps.stores)}")


# -- does the cloud convert qcow2 on import? -------------------------------------------------------------------


def converts_qcow2(target: Target, caps: Capabilities, *, probe: bool = True, again: bool = False) -> bool | None:
    """From the memo (a day old at most), else by probing; None when it is not known and probe is False.
    again: probe even when the memo knows (`invoke probe`)."""
    if "glance-direct" not in caps.import_methods:
        return False
    if target.local:  # the trusted-headers local Glance runs no import plugin (glance/local.py): nothing to probe
        return False
    memo = state_dir() / "capabilities" / f"{target.identity}.json"
    try:
        known = json.loads(memo.read_text())
        if not again and dt.datetime.fromisoformat(known["probed"]) > dt.datetime.now(dt.timezone.utc) - PROBE_TTL:
            return bool(known["converts_qcow2"])
    except (OSError, ValueError, KeyError):
        pass
    if not probe:
        return None
    converts = _probe(target)
    write_atomically(memo, json.dumps({"converts_qcow2": converts, "probed": dt.datetime.now(dt.timezone.utc).isoformat()}))
    say(f"{target.name}: {'converts' if converts else 'does not convert'} a staged qcow2 on import (probed with a 1 MiB image)")
    return converts


def probe(target: Target, report) -> bool | None:
    """`invoke probe`: learn now (an import of a 1 MiB qcow2, deleted after) whether the cloud converts a staged
    qcow2, so that plan can tell the route; None when the cloud offers no glance-direct (nothing to learn)."""
    caps = discover(target)
    report.target = target.to_dict()
    converts = converts_qcow2(target, caps, again=True) if "glance-direct" in caps.import_methods else None
    report.details["probe"] = {"glance_direct": "glance-direct" in caps.import_methods, "converts_qcow2": converts}
    report.ok = True
    return converts


def _probe(target: Target) -> bool:
    """Import a 1 MiB qcow2 and see what Glance stored; the probe image is deleted (and leased until then)."""
    glance = target.glance
    with tempfile.TemporaryDirectory(prefix="bakery-probe-") as scratch:
        probe = Path(scratch) / "probe.qcow2"
        run(["qemu-img", "create", "-q", "-f", "qcow2", probe, "1M"], timeout=60)
        image = glance.images.create(name="bakery capability probe", disk_format="qcow2", container_format="bare",
                                     visibility="private", os_hidden=True, **{STATE_KEY: "uploading", **lease_properties(1 << 20)})
        try:
            with open(probe, "rb") as data:
                target.uploader.images.stage(image["id"], data, image_size=probe.stat().st_size)
            glance.images.image_import(image["id"], method="glance-direct")
            stored = _wait_for_import(target, image["id"], timeout_s=120)
            return stored.get("disk_format") == "raw" and stored.get("status") == "active"
        except (ImportFailed, glance_exc.HTTPException):
            return False
        finally:
            try:
                glance.images.delete(image["id"])
            except glance_exc.HTTPException:
                pass


# -- sending ----------------------------------------------------------------------------------------------------


class ImportFailed(BakeryError):
    """The server's import task failed (conversion refused, a store failed, the server restarted)."""


@dataclass(frozen=True)
class Delivery:
    measured: Measurement  # of the raw image the server must now hold
    sent_bytes: int  # what went over the wire from here (0: the server fetched it)


def deliver(target: Target, image_id: str, path: Path, size: int, chosen: Route, *, known: Measurement | None) -> Delivery:
    """Send (or have fetched) the image, and wait until the server holds it."""
    if chosen.method == "direct":
        return Delivery(_direct(target, image_id, path, size, chosen), size)
    if chosen.method == "web-download":
        delivery = Delivery(known or _measure(path, size), 0)
        target.glance.images.image_import(image_id, method="web-download", uri=chosen.url, **_stores(chosen))
    elif chosen.stage_format == "qcow2":
        delivery = _stage_qcow2(target, image_id, path, size)
        target.glance.images.image_import(image_id, method="glance-direct", **_stores(chosen))
    else:
        delivery = Delivery(_sent_measured(path, size, "stage",
                                           lambda reader: target.uploader.images.stage(image_id, reader, image_size=size)), size)
        target.glance.images.image_import(image_id, method="glance-direct", **_stores(chosen))
    _wait_for_import(target, image_id, timeout_s=IMPORT_GRACE_S + size / IMPORT_RATE, route=chosen)
    return delivery


def _direct(target: Target, image_id: str, path: Path, size: int, chosen: Route) -> Measurement:
    backend = {"backend": chosen.stores[0]} if chosen.stores else {}
    return _sent_measured(path, size, "upload",
                          lambda reader: target.uploader.images.upload(image_id, reader, image_size=size, **backend))


def _sent_measured(path: Path, size: int, verb: str, send: Callable[[HashingReader], object]) -> Measurement:
    """Send the file through a measuring reader (one pass: what was sent is what was hashed)."""
    with progress(f"{verb} {path.name}", size) as advance, HashingReader(path, on_read=advance) as reader:
        send(reader)
        if reader.read(1):  # the client stops at image_size; anything more means the file grew
            raise BakeryError(f"{path} grew during the upload")
        return reader.result()


def _stage_qcow2(target: Target, image_id: str, path: Path, size: int) -> Delivery:
    qcow2 = path.with_name(path.name + f".{image_id[:8]}.qcow2")
    try:
        with progress(f"qcow2 of {path.name}", size) as advance:
            measured = stage_qcow2(path, qcow2, on_read=advance)
        sent = qcow2.stat().st_size
        say(f"staging {sent / 2**20:,.0f} MiB of qcow2 for {size / 2**20:,.0f} MiB of raw ({100 * sent / max(size, 1):.0f}%)")
        with open(qcow2, "rb") as data:
            target.uploader.images.stage(image_id, data, image_size=sent)
        return Delivery(measured, sent)
    finally:
        qcow2.unlink(missing_ok=True)


def _measure(path: Path, size: int) -> Measurement:
    with progress(f"measure {path.name}", size) as advance:
        return measure_file(path, on_read=advance)


def _stores(chosen: Route) -> dict:
    if chosen.all_stores:
        return {"all_stores": True, "allow_failure": not chosen.all_stores_must_succeed}
    if chosen.stores:
        return {"stores": list(chosen.stores), "allow_failure": not chosen.all_stores_must_succeed}
    return {}


def _wait_for_import(target: Target, image_id: str, *, timeout_s: float, route: Route | None = None,
                     until_stores: tuple[str, ...] = ()) -> dict:
    """Until the import task is over: the image active (and in `until_stores`, for a copy of an image that
    is active already), or the task's failure said in one line."""
    deadline = time.monotonic() + timeout_s
    delay = IMPORT_POLL_S[0]
    while True:
        image = dict(target.glance.images.get(image_id))
        importing = [s for s in (image.get("os_glance_importing_to_stores") or "").split(",") if s]
        failed = [s for s in (image.get("os_glance_failed_import") or "").split(",") if s]
        stored = set((image.get("stores") or "").split(","))
        arrived = all(s in stored or s in failed for s in until_stores)
        if not importing and image.get("status") == "active" and arrived:
            if failed and route and route.all_stores_must_succeed:
                raise ImportFailed(f"{target.name}: import to store(s) {', '.join(failed)} failed: {_task_message(target, image_id)}")
            if failed:
                say(f"{target.name}: import to store(s) {', '.join(failed)} failed ({_task_message(target, image_id)}); "
                    "all_stores_must_succeed is false, so the image is kept in the others")
            return image
        if image.get("status") in ("killed", "deleted", "deactivated") or (not importing and failed) or (
                image.get("status") in ("queued", "uploading") and _task_failed(target, image_id)):
            where = f" to store(s) {', '.join(failed)}" if failed else ""
            raise ImportFailed(f"{target.name}: the import{where} failed: {_task_message(target, image_id)}")
        if time.monotonic() > deadline:
            raise ImportFailed(f"{target.name}: the import did not finish within {timeout_s / 60:.0f} min (status {image.get('status')})")
        time.sleep(delay)
        delay = min(delay * 1.5, IMPORT_POLL_S[1])


def _tasks(target: Target, image_id: str) -> list[dict]:
    try:
        return list(target.glance.images.get_associated_image_tasks(image_id).get("tasks") or [])
    except Exception:  # tasks API before Glance 2.12, or forbidden: the status alone has to do
        return []


def _task_failed(target: Target, image_id: str) -> bool:
    tasks = _tasks(target, image_id)
    return bool(tasks) and tasks[0].get("status") == "failure"


def _task_message(target: Target, image_id: str) -> str:
    tasks = sorted(_tasks(target, image_id), key=lambda t: t.get("created_at") or "", reverse=True)
    for task in tasks:
        if task.get("message"):
            return " ".join(str(task["message"]).split())[:300]
    return "no message from the server's import task"



def copy_to_stores(target: Target, image_id: str, stores: tuple[str, ...], report) -> dict:
    """`invoke copy-image`: an existing image into more stores (a new site's pool), then proven unchanged."""
    from pipeline.glance.images import fetch_image

    caps = discover(target)
    if "copy-image" not in caps.import_methods:
        raise BakeryError(f"{target.name}: the copy-image import method is not offered (it offers {', '.join(caps.import_methods) or 'none'})")
    _check_stores(target, UploadSpec(stores=stores), caps)
    before = fetch_image(target, image_id)
    if before.get("status") != "active":
        raise BakeryError(f"{target.name}: image {image_id} is {before.get('status')}; only an active image can be copied")
    wanted = [s for s in stores if s not in (before.get("stores") or "").split(",")]
    if wanted:
        target.glance.images.image_import(image_id, method="copy-image", stores=wanted, allow_failure=False)
        _wait_for_import(target, image_id, timeout_s=IMPORT_GRACE_S + int(before.get("size") or 0) / IMPORT_RATE,
                         route=Route("copy-image", "raw", tuple(wanted), False, True, None, "copy-image"), until_stores=tuple(wanted))
    after = fetch_image(target, image_id)
    stored = [s for s in (after.get("stores") or "").split(",") if s]
    missing = [s for s in stores if s not in stored]
    changed = [k for k in ("checksum", "os_hash_value", "size") if after.get(k) != before.get(k)]
    if missing or changed:
        raise BakeryError(f"{target.name}: copy of {image_id} failed: " + "; ".join(
            ([f"not in store(s) {', '.join(missing)}"] if missing else []) + ([f"{', '.join(changed)} changed"] if changed else [])))
    report.target = target.to_dict()
    report.details["copy"] = {"image": image_id, "copied_to": wanted, "stores": stored, "checksum": after.get("checksum")}
    say(f"{image_id} is in store(s) {', '.join(stored)}; checksum {after.get('checksum')} unchanged")
    report.ok = True
    return report.details["copy"]
