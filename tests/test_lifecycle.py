"""The life of past releases on the real Keystone-authenticated Glance: plan, apply, in use, promises, SCS-0102.

Releases are published through the CLI as a release engineer does, months apart (--release-date); the
lifecycle counts ages to a given --today so the tests do not depend on the calendar.
"""

from __future__ import annotations

import datetime as dt

import pytest

from pipeline.glance.usage import image_usage
from tests.conftest import ok, one_line_error

SCS = {"replace_frequency": "monthly", "provided_until": "2030-12-31", "uuid_validity": "last-1",
       "image_source": "https://images.example.org/windows/", "image_description": "https://images.example.org/windows/notes",
       "image_original_user": "Administrator"}
POLICY = {"hide_after_days": 14, "deactivate_after_days": 90, "delete_after_days": 150, "exempt": {"tags": ["keep-forever"]}}


def publish(account, date: str, *, scs: dict | None = SCS, cloud_name: str = "bakery-member") -> dict:
    extra = {"scs": scs} if scs else {}
    manifest = account.manifest(f"r{date}.yaml", **extra)
    return ok(*account.run("build-and-publish", "--manifest", str(manifest), "--release-date", date, cloud_name=cloud_name,
                           json_name=f"publish-{date}.json"))["image"]


def lifecycle(account, policy: dict, *args: str, scs: dict | None = SCS, today: str = "2026-11-01", json_name: str = "lc.json"):
    extra = {"scs": scs} if scs else {}
    manifest = account.manifest("lifecycle.yaml", release={"lifecycle": policy}, **extra)
    return account.run("lifecycle", "--manifest", str(manifest), "--today", today, *args, json_name=json_name)


def decisions(report: dict) -> dict[str, dict]:
    return {d["id"]: d for d in report["details"]["targets"][0]["plan"]["decisions"]}


def state(account) -> dict[str, tuple]:
    return {i["id"]: (i["status"], bool(i.get("os_hidden")), i["name"], i.get("recommended")) for i in account.images()}


def test_a_dry_run_changes_nothing_and_apply_does_exactly_the_plan(account):
    exempt = publish(account, "2025-12-01")
    oldest, older, previous, current = (publish(account, d) for d in ("2026-01-01", "2026-04-01", "2026-08-01", "2026-10-15"))
    admin = account.target("bakery-admin")
    admin.glance.image_tags.update(exempt["id"], "keep-forever")
    before = state(account)

    proc, planned = lifecycle(account, {**POLICY, "in_use_checks": ["members"]})
    ok(proc, planned)
    assert state(account) == before, "a plan must not change anything"
    actions = {image_id: d["action"] for image_id, d in decisions(planned).items()}
    assert actions == {current["id"]: "keep", previous["id"]: "hide", older["id"]: "deactivate", oldest["id"]: "delete",
                       exempt["id"]: "keep"}
    why = decisions(planned)
    assert why[current["id"]]["why"] == "the recommended release" and "keep-forever" in why[exempt["id"]]["why"]
    assert why[oldest["id"]]["age_days"] == (dt.date(2026, 11, 1) - dt.date(2026, 4, 1)).days  # since its successor's release
    assert "plan only" in proc.stdout

    applied = ok(*lifecycle(account, {**POLICY, "in_use_checks": ["members"]}, "--apply", json_name="apply.json"))
    assert all(d["done"] for d in decisions(applied).values() if d["action"] != "keep")
    after = state(account)
    assert oldest["id"] not in after
    assert after[older["id"]][0] == "deactivated"
    assert after[previous["id"]][1] is True and after[previous["id"]][2].endswith(" 20260801")  # SCS: hidden and renamed
    assert after[current["id"]] == before[current["id"]] and after[exempt["id"]] == before[exempt["id"]]

    again = ok(*lifecycle(account, {**POLICY, "in_use_checks": ["members"]}, "--apply", json_name="again.json"))
    assert {d["action"] for d in decisions(again).values()} == {"keep"}  # converged: nothing left to do
    assert state(account) == after


def test_what_cannot_be_checked_or_is_in_use_or_promised_is_kept(account, cloud):
    shared = publish(account, "2026-01-01", scs={**SCS, "uuid_validity": "none"})
    promised = publish(account, "2026-02-01", scs={**SCS, "uuid_validity": "forever"})
    publish(account, "2026-10-01")
    policy = {"delete_after_days": 30}

    planned = ok(*lifecycle(account, policy))  # Nova, Cinder and Glance asked: nothing uses it yet
    why = decisions(planned)
    assert why[shared["id"]]["action"] == "delete" and why[shared["id"]]["usage"] == {
        "servers": {"users": [], "unknown": None}, "volumes": {"users": [], "unknown": None}, "members": {"users": [], "unknown": None}}
    assert why[promised["id"]]["action"] == "keep" and "uuid_validity is forever" in why[promised["id"]]["why"]

    member = account.target("bakery-member")
    other_project = cloud._state()["users"]["other-builder"]["project_id"]
    member.glance.images.update(shared["id"], visibility="shared")
    member.glance.image_members.create(shared["id"], other_project)
    # a member cannot see the other project's servers: "cannot tell" is never "unused"
    planned = ok(*lifecycle(account, {**policy, "in_use_checks": ["servers"]}, json_name="blind.json"))
    assert decisions(planned)[shared["id"]]["action"] == "keep"
    assert "servers: cannot tell (the image is shared and only an admin may list" in decisions(planned)[shared["id"]]["why"]
    applied = ok(*lifecycle(account, {**policy, "in_use_checks": ["members"]}, "--apply", json_name="apply.json"))
    why = decisions(applied)
    assert why[shared["id"]]["action"] == "keep" and f"shared with project {other_project}" in why[shared["id"]]["why"]
    assert {i["id"] for i in account.images()} >= {shared["id"], promised["id"]}


def api(service: str, version: str):
    """A call to the local cloud's real Nova ("compute", "compute 2.90") or Cinder ("volumev3", "volume 3.4"),
    through the account's own session and catalog."""
    def call(target, method: str, path: str, **kwargs):
        answer = target.session.request(path, method, endpoint_filter={"service_type": service, **target.endpoint_filter},
                                        headers={"OpenStack-API-Version": version}, raise_exc=False, **kwargs)
        assert answer.status_code < 300, answer.text
        return answer.json() if answer.content else None
    return call


nova, cinder = api("compute", "compute 2.90"), api("volumev3", "volume 3.4")


def test_a_server_or_a_volume_made_from_an_image_keeps_it_and_only_it(account):
    booted, on_volume, unused = (publish(account, d, scs=None) for d in ("2026-01-01", "2026-02-01", "2026-03-01"))
    current = publish(account, "2026-10-01", scs=None)
    member, admin = account.target("bakery-member"), account.target("bakery-admin")
    server = nova(member, "POST", "/servers", json={"server": {"name": "still-on-january", "imageRef": booted["id"],
                                                               "flavorRef": "bakery-windows", "networks": "none"}})["server"]
    volume = cinder(member, "POST", "/volumes", json={"volume": {"size": 40, "name": "february-disk"}})["volume"]
    # what Cinder's volume service records when it writes an image to a volume (no volume service runs here)
    cinder(admin, "POST", f"/volumes/{volume['id']}/action", json={"os-reset_status": {"status": "available"}})
    cinder(member, "POST", f"/volumes/{volume['id']}/action", json={"os-set_image_metadata": {"metadata": {"image_id": on_volume["id"]}}})

    applied = ok(*lifecycle(account, {"delete_after_days": 30}, "--apply", scs=None))
    why = decisions(applied)
    assert why[booted["id"]]["action"] == "keep" and f"servers: server {server['id']} (still-on-january)" in why[booted["id"]]["why"]
    assert why[on_volume["id"]]["action"] == "keep" and f"volumes: volume {volume['id']} (february-disk" in why[on_volume["id"]]["why"]
    assert why[unused["id"]]["action"] == "delete"
    assert {i["id"] for i in account.images()} == {booted["id"], on_volume["id"], current["id"]}
    # an admin looks across projects (all_tenants), where Cinder's image filter is honoured
    for image, check in ((booted, "servers"), (on_volume, "volumes")):
        assert image_usage(admin, dict(admin.glance.images.get(image["id"])), (check,)).in_use
    assert not image_usage(admin, dict(admin.glance.images.get(current["id"])), ("servers", "volumes")).in_use


def test_a_failure_half_way_leaves_a_consistent_family_and_a_rerun_finishes(account):
    from pipeline.manifest import LifecyclePolicy
    from pipeline.publish import lifecycle as stage

    first, second = publish(account, "2026-01-01", scs=None), publish(account, "2026-02-01", scs=None)
    third, current = publish(account, "2026-03-01", scs=None), publish(account, "2026-10-01", scs=None)
    member, admin = account.target("bakery-member"), account.target("bakery-admin")
    policy = LifecyclePolicy(delete_after_days=30, in_use_checks=("members",))
    planned = stage.plan(member, {"os_distro": "windows", "os_distro_major": account.family, "os_edition": "DESKTOP",
                                  "architecture": "x86_64"}, policy, dt.date(2026, 11, 1))
    assert {d.image["id"] for d in planned.changes} == {first["id"], second["id"], third["id"]}
    admin.glance.images.update(second["id"], protected=True)  # another operator protects it while this run works
    stage.apply(member, planned, policy)
    assert [d.image["id"] for d in planned.failed] == [second["id"]] and "protected" in planned.failed[0].error
    assert {i["id"] for i in account.images()} == {second["id"], current["id"]}  # the others were done, the release untouched
    assert member.glance.images.get(current["id"])["recommended"] == "true"

    proc, report = lifecycle(account, {"delete_after_days": 30, "in_use_checks": ["members"]}, "--apply", scs=None)
    ok(proc, report)
    assert decisions(report)[second["id"]]["why"] == "protected in Glance"
    admin.glance.images.update(second["id"], protected=False)
    ok(*lifecycle(account, {"delete_after_days": 30, "in_use_checks": ["members"]}, "--apply", scs=None, json_name="finish.json"))
    assert {i["id"] for i in account.images()} == {current["id"]}


def test_the_scs_profile_is_published_and_audit_flags_what_does_not_conform(account):
    """The checker judges public and community images; a member publishes community ones."""
    plain = ok(*account.run("build-and-publish", "--manifest", str(account.manifest("plain.yaml", visibility="community")),
                            "--release-date", "2026-09-01", json_name="plain.json"))["image"]
    manifest = account.manifest("scs.yaml", scs=SCS, visibility="community")
    today = dt.date.today().isoformat()  # a monthly image of two months ago is outdated: the checker would fail it
    conforming = ok(*account.run("build-and-publish", "--manifest", str(manifest), "--release-date", today,
                                 json_name="scs.json"))["image"]
    stored = account.target("bakery-member").glance.images.get(conforming["id"])
    assert {k: stored[k] for k in SCS} == SCS and stored["image_build_date"] == today and stored["os_purpose"] == "generic"
    proc, report = account.run("audit", "--standard", "scs-0102", json_name="audit.json")
    one_line_error(proc, "SCS-0102", "do not conform")
    findings = report["details"]["standard"]["findings"]
    errors = {(f["image"], f["message"]) for f in findings if f["level"] == "error"}
    assert not [m for i, m in errors if i == conforming["id"]], errors
    assert (plain["id"], "mandatory property provided_until is missing") in errors
    assert plain["id"] in proc.stdout


@pytest.mark.parametrize("section, fragment", [
    ({"scs": {**SCS, "uuid_validity": "last-0"}}, "scs.uuid_validity: expected none, notice, forever, last-N"),
    ({"scs": {**SCS, "replace_frequency": "fortnightly"}}, "scs.replace_frequency: expected one of yearly"),
    ({"scs": {**SCS, "image_source": "somewhere"}}, "scs.image_source: expected a URL or private"),
    ({"scs": {**SCS, "provided_until": "2026-02-30"}}, "scs.provided_until"),
    ({"release": {"lifecycle": {"hide_after_days": 90, "delete_after_days": 30}}}, "release.lifecycle.delete_after_days: expected at least"),
    ({"release": {"lifecycle": {"in_use_checks": ["servers", "flavors"]}}}, "release.lifecycle.in_use_checks.1"),
    ({"release": {"lifecycle": {"keep": 2}}}, "release.lifecycle.keep: unknown field"),
], ids=["last-0", "frequency", "source", "impossible-date", "order", "check", "unknown"])
def test_bad_lifecycle_and_scs_settings_are_one_line_errors(glance_server, tmp_path, section, fragment):
    from tests.conftest import MiB, make_image, run_invoke, write_manifest

    image = tmp_path / "x.raw"
    manifest = write_manifest(tmp_path, image, make_image(image, MiB), **section)
    proc = run_invoke("plan", "--manifest", str(manifest), state=tmp_path / "state", env={"BAKERY_GLANCE_PORT": str(glance_server.port)})
    one_line_error(proc, fragment, str(manifest))


def test_an_unquoted_yaml_date_is_the_date_meant(tmp_path):
    """The README's `provided_until: 2029-01-09`, unquoted, is a YAML date: it means that day."""
    import yaml

    from pipeline.manifest import load_manifest
    from tests.conftest import MiB, make_image, write_manifest

    image = tmp_path / "x.raw"
    path = write_manifest(tmp_path, image, make_image(image, MiB), scs={**SCS, "provided_until": "PLACEHOLDER", "uuid_validity": "PLACE2"})
    path.write_text(path.read_text().replace("PLACEHOLDER", "2029-01-09").replace("PLACE2", "2030-01-01"))
    assert isinstance(yaml.safe_load(path.read_text())["scs"]["provided_until"], __import__("datetime").date)
    manifest = load_manifest(path, release_date="2026-11-01")
    assert (manifest.scs.provided_until, manifest.scs.uuid_validity) == ("2029-01-09", "2030-01-01")


def test_one_visible_image_per_family_under_its_plain_name():
    from pipeline.properties.scs import check_catalog

    now = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
    base = {**SCS, "owner": "p1", "os_distro": "windows", "os_version": "10", "architecture": "x86_64", "os_distro_major": "w10",
            "os_edition": "DESKTOP", "hypervisor_type": "qemu", "hw_disk_bus": "virtio", "image_build_date": "2026-10-01",
            "created_at": "2026-10-02T00:00:00Z", "status": "active", "os_hash_algo": "sha512", "min_ram": 2048, "min_disk": 40,
            "size": 10 * 2**30, "name": "windows 10", "visibility": "public", "os_purpose": "generic"}

    def rule(images):
        return {f.image_id for f in check_catalog(images, now) if "visible images" in f.message}

    assert rule([{**base, "id": "a"}, {**base, "id": "b"}]) == {"a", "b"}
    assert rule([{**base, "id": "a"}, {**base, "id": "b", "os_hidden": True}]) == set()
    assert rule([{**base, "id": "a"}, {**base, "id": "b", "name": "windows 10 20261001"}]) == set()  # renamed with its date
    assert rule([{**base, "id": "a"}, {**base, "id": "b", "os_edition": "SERVER"}]) == set()  # another product
    assert rule([{**base, "id": "a"}, {**base, "id": "b", "owner": "p2"}]) == set()  # another provider's catalog
    assert not [f for f in check_catalog([{**base, "id": "a"}], now) if f.level == "error"]  # a conforming image


def test_an_scs_release_keeps_the_plain_name_and_the_superseded_one_gets_its_date(account):
    """What the SCS checker needs to find an outdated image's replacement: the current one under the plain name."""
    first = publish(account, "2026-10-01")
    second = publish(account, "2026-11-01")
    target = account.target("bakery-member")
    assert target.glance.images.get(second["id"])["name"] == "Windows 10 - With Apps"
    assert target.glance.images.get(first["id"])["name"] == "Windows 10 - With Apps 20261001"


def test_an_scs_image_the_standard_would_fail_is_refused_before_anything_is_built(account):
    manifest = account.manifest("sata.yaml", scs=SCS, properties={"hw_disk_bus": "sata"})
    proc, _ = account.run("plan", "--manifest", str(manifest), json_name="sata.json")
    one_line_error(proc, "scs-0102", "hw_disk_bus", "sata")
    dated = account.manifest("dated.yaml", scs=SCS, image_name="Windows 10 [{{ release_date }}]")
    proc, _ = account.run("plan", "--manifest", str(dated), json_name="dated.json")
    one_line_error(proc, "name", "plain name")


def test_community_releases_a_member_published_are_retired_with_a_usage_credential_and_a_family_owner(account, cloud):
    """The member publishes `community` (public needs admin); another project boots one of its releases.
    Alone, the member cannot tell who uses a community image; with a second credential that may list every
    project's servers (here the admin's), the unused release goes and the booted one stays. An admin, naming
    the member's project as the family's owner, sees and plans the same family."""
    def community(date: str) -> dict:
        manifest = account.manifest(f"c{date}.yaml", visibility="community")
        return ok(*account.run("build-and-publish", "--manifest", str(manifest), "--release-date", date,
                               json_name=f"publish-{date}.json"))["image"]

    unused, booted, current = (community(d) for d in ("2026-01-01", "2026-02-01", "2026-10-01"))
    server = nova(account.target("bakery-other"), "POST", "/servers", json={"server": {
        "name": "other-project-on-february", "imageRef": booted["id"], "flavorRef": "bakery-windows", "networks": "none"}})["server"]
    policy = {"delete_after_days": 30, "in_use_checks": ["servers", "volumes"]}

    blind = decisions(ok(*lifecycle(account, policy, scs=None, json_name="blind.json")))
    assert blind[unused["id"]]["action"] == blind[booted["id"]]["action"] == "keep"
    assert "servers: cannot tell (the image is community" in blind[unused["id"]]["why"]

    proc, _ = lifecycle(account, policy, "--usage-cloud", "bakery-other", scs=None, json_name="other.json")
    other = decisions(ok(proc, _))  # a credential that sees only its own project cannot answer for the member's image
    assert other[unused["id"]]["action"] == "keep" and "cannot tell" in other[unused["id"]]["why"]

    applied = ok(*lifecycle(account, policy, "--apply", "--usage-cloud", "bakery-admin", scs=None, json_name="reader.json"))
    why = decisions(applied)
    assert why[unused["id"]]["action"] == "delete" and why[unused["id"]]["done"]
    assert why[booted["id"]]["action"] == "keep" and f"server {server['id']} (other-project-on-february)" in why[booted["id"]]["why"]
    assert applied["details"]["reach"]["usage"]["name"] == "bakery-admin"
    assert {i["id"] for i in account.images()} == {booted["id"], current["id"]}

    member_project = account.target("bakery-member").project_id
    manifest = account.manifest("lifecycle.yaml", release={"lifecycle": {"hide_after_days": 14}})
    as_admin = ok(*account.run("lifecycle", "--manifest", str(manifest), "--today", "2026-11-01", "--family-owner", member_project,
                               cloud_name="bakery-admin", json_name="admin.json"))
    planned = decisions(as_admin)
    assert set(planned) == {booted["id"], current["id"]}
    assert planned[current["id"]]["action"] == "keep" and planned[booted["id"]]["action"] == "hide"
    mine = ok(*account.run("lifecycle", "--manifest", str(manifest), "--today", "2026-11-01", cloud_name="bakery-admin",
                           json_name="admin-own.json"))
    assert decisions(mine) == {}  # without --family-owner the admin's own project has no such family
    proc, _ = account.run("lifecycle", "--manifest", str(manifest), "--family-owner", "x;rm -rf /", cloud_name="bakery-admin",
                          json_name="bad.json")
    one_line_error(proc, "--family-owner", "expected a project id")
