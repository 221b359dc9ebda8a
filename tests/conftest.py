"""Fixtures: a real Glance on loopback for the whole session, and per-test state and projects."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from pipeline.common.paths import PROJECT_ROOT
from pipeline.glance.connect import Target, connect_local
from pipeline.glance.local import LocalGlance

MiB = 1024 * 1024


PORT_WINDOW = 1500  # ports per pytest worker, below the kernel's ephemeral range
RESERVED_PORTS = {19292, 19293, 15000, 13306, 18774, 18776}  # the bakery's defaults: a developer's own may run there
_handed_out: set[int] = set()


def free_port() -> int:
    """A port nothing listens on, never handed out twice in this process, and from this pytest worker's own window
    (gw0, gw1 ... of pytest-xdist) below the kernel's ephemeral range: two workers asking at the same instant
    cannot get the same port, and no outgoing connection is given it meanwhile."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    start = 20000 + (int(worker) if worker.isdigit() else 0) * PORT_WINDOW
    if start + PORT_WINDOW > _ephemeral_start():
        return _kernel_port()
    for port in range(start, start + PORT_WINDOW):
        if port in _handed_out or port in RESERVED_PORTS:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    return _kernel_port()


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _kernel_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def session_state(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bakery-state")


@pytest.fixture(scope="session")
def glance_server(session_state) -> LocalGlance:
    server = LocalGlance(root=session_state / "glance", port=free_port())
    server.up(timeout=120)
    yield server
    server.down()


@pytest.fixture(autouse=True)
def isolated_state(tmp_path, monkeypatch) -> Path:
    """Memo, journal and work directories of each test are its own."""
    state = tmp_path / "state"
    monkeypatch.setenv("BAKERY_STATE_DIR", str(state))
    for key in [k for k in os.environ if k.startswith("OS_")]:
        monkeypatch.delenv(key)
    return state


@pytest.fixture
def project() -> str:
    """A project of its own for each test: families and RBAC do not leak between tests."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def target(glance_server, project) -> Target:
    """The test's own project; its images are deleted afterwards, because Glance's file store keeps every
    byte (a sparse 1 GiB image costs 1 GiB) and the session's store would otherwise grow past 20 GB."""
    connected = connect_local(glance_server, project_id=project)
    yield connected
    try:
        for image in project_images(connected):
            connected.glance.images.delete(image["id"])
    except Exception:  # already gone, or a test stopped the server: nothing left to free
        pass


def make_image(path: Path, size: int, *, seed: str = "", sparse_tail: int = 0) -> str:
    """A raw image with deterministic, non-compressible content (+ an optional sparse tail); its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    block = hashlib.sha512(seed.encode()).digest() * 2048  # 128 KiB
    with open(path, "wb") as handle:
        written = 0
        while written < size:
            chunk = block[: min(len(block), size - written)]
            handle.write(chunk)
            digest.update(chunk)
            written += len(chunk)
        if sparse_tail:
            handle.truncate(size + sparse_tail)
            zeros = bytes(MiB)
            for offset in range(0, sparse_tail, MiB):
                digest.update(zeros[: min(MiB, sparse_tail - offset)])
    return digest.hexdigest()


def write_manifest(directory: Path, image_path: Path, sha256: str, *, name: str = "manifest.yaml", image_name: str | None = None,
                   **overrides) -> Path:
    """A valid manifest of the test family, with sections replaced or extended by `overrides`; `name` is the file's,
    `image_name` the image's (with an scs: profile the plain family name, without a date)."""
    document = {
        "name": image_name or ("Windows 10 - With Apps" if "scs" in overrides else "Windows 10 - With Apps [{{ release_date }}]"),
        "family": {"os_distro": "windows", "os_distro_major": "w10entx64", "os_edition": "DESKTOP", "architecture": "x86_64"},
        "os": {"type": "windows", "version": "10"},
        "source": {"path": str(image_path), "sha256": sha256},
        "image": {"visibility": "private", "min_ram": 2048},
        "properties": {"hw_disk_bus": "virtio"},
    }
    path = directory / name
    path.write_text(yaml.safe_dump(with_overrides(document, overrides), sort_keys=False))
    return path


def with_overrides(document: dict, overrides: dict) -> dict:
    """A manifest document with sections replaced, or (for a mapping given for a mapping) extended."""
    merged = dict(document)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def processes_mentioning(fragment: str) -> list[str]:
    """Running processes (not this one) whose command line mentions `fragment`: what a test left behind."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if fragment in cmdline:
                found.append(f"{proc.name}: {cmdline[:120]}")
    return found


def project_images(target: Target) -> list[dict]:
    """Every image the project owns, hidden ones included."""
    seen = {}
    for filters in ({}, {"os_hidden": True}):
        for image in target.glance.images.list(filters=filters):
            if image.get("owner") == target.project_id:
                seen[image["id"]] = dict(image)
    return list(seen.values())


# -- synthetic Windows media (format-real fixtures) --------------------------------------------------------

FIXTURE_SIZE = 1024**3  # virtual; sparse, so only NTFS metadata is written


def offline_windows_tools_missing() -> str | None:
    """Why the NTFS/FUSE tests cannot run here, or None."""
    import shutil

    if not Path("/dev/fuse").exists():
        return "no /dev/fuse: the bake mounts NTFS through FUSE"
    for tool, package in (("qemu-storage-daemon", "qemu-system-common"), ("lowntfs-3g", "ntfs-3g"), ("mkntfs", "ntfs-3g")):
        if shutil.which(tool) is None:
            return f"{tool} missing (Debian package {package}; `make deps` installs it)"
    try:
        import hivex  # noqa: F401
    except ImportError:
        return "hivex bindings missing (python3-hivex; `make deps` links them into the venv)"
    return None


@pytest.fixture(scope="session")
def media(tmp_path_factory):
    """Fixture disks and virtio-win ISOs, each generated once per session on first use."""
    reason = offline_windows_tools_missing()
    if reason:
        pytest.skip(reason)
    from pipeline.common.digests import sha256_file
    from pipeline.synthetic import virtio_iso, windows_disk

    root = tmp_path_factory.mktemp("media")

    class Media:
        def __init__(self):
            self.made: dict[tuple, Path] = {}

        def disk(self, release: str, fmt: str = "raw") -> tuple[Path, str]:
            key = ("disk", release, fmt)
            if key not in self.made:
                self.made[key] = windows_disk.generate(root / f"{release}.{fmt}", release, size=FIXTURE_SIZE, fmt=fmt)
            return self.made[key], sha256_file(self.made[key])

        def iso(self, version: str = "0.1.240") -> tuple[Path, str]:
            key = ("iso", version)
            if key not in self.made:
                self.made[key] = virtio_iso.write_iso(root / f"virtio-win-{version}.iso", version)
            return self.made[key], sha256_file(self.made[key])

    return Media()


# -- the stand-in installation media (QEMU tests) ----------------------------------------------------------

STANDIN_DISK_SIZE = 300 * MiB  # what the stand-in "applies"; small, since a TCG guest writes it
STANDIN_IMAGES = ((1, "Windows 10 Enterprise", "w10"), (2, "Windows Server 2022 SERVERSTANDARD", "2k22"),
                  (3, "Windows 11 Enterprise", "w11"), (4, "Windows 7 ENTERPRISE", "w7"))


def qemu_tools_missing() -> str | None:
    import shutil

    for tool, package in (("qemu-system-x86_64", "qemu-system-x86"), ("swtpm", "swtpm"), ("xorriso", "xorriso"),
                          ("mformat", "mtools"), ("sbsign", "sbsigntool")):
        if shutil.which(tool) is None:
            return f"{tool} missing (Debian package {package}; `make deps` installs it)"
    for path in ("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd", "/usr/lib/ISOLINUX/isolinux.bin", "/usr/bin/busybox",
                 "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"):
        if not Path(path).exists():
            return f"{path} missing (`make deps` installs ovmf, isolinux, busybox-static and systemd-boot-efi)"
    return None


@pytest.fixture(scope="session")
def standin_kernel(tmp_path_factory) -> Path:
    """Where Debian's kernel package is unpacked once for every stand-in of the session."""
    reason = qemu_tools_missing()
    if reason:
        pytest.skip(reason)
    return tmp_path_factory.mktemp("standin-kernel")


@pytest.fixture(scope="session")
def bootable(media, standin_kernel, tmp_path_factory):
    """Synthetic Windows disks that boot the stand-in "Windows" from their own MBR or ESP (standin_windows.py)."""
    import shutil

    if shutil.which("grub-mkimage") is None or not Path("/usr/lib/grub/i386-pc/boot.img").exists():
        pytest.skip("grub-pc-bin missing (its boot.img and core.img boot the BIOS stand-in; `make deps` installs it)")
    from pipeline.common.digests import sha256_file
    from pipeline.synthetic import windows_disk

    root = tmp_path_factory.mktemp("bootable")
    made: dict[str, Path] = {}

    def disk(release: str) -> tuple[Path, str]:
        if release not in made:
            made[release] = windows_disk.generate(root / f"{release}.raw", release, size=STANDIN_DISK_SIZE,
                                                  bootable_with=standin_kernel)
        return made[release], sha256_file(made[release])

    return disk


@pytest.fixture(scope="session")
def bootable_install_media(bootable, standin_kernel, tmp_path_factory):
    """(stand-in install ISO, its sha256) whose one image, Windows 10, boots the stand-in Windows once applied."""
    from pipeline.common.digests import sha256_file
    from pipeline.synthetic import standin

    root = tmp_path_factory.mktemp("bootable-install-media")
    iso = standin.build_iso(root / "standin-setup.iso", [standin.StandinImage(1, "Windows 10 Enterprise", bootable("w10")[0])],
                            cache=standin_kernel)
    return iso, sha256_file(iso)


@pytest.fixture(scope="session")
def install_media(media, standin_kernel, tmp_path_factory):
    """(stand-in install ISO, its sha256): boots under SeaBIOS and OVMF, carries four "install.wim" images."""
    reason = qemu_tools_missing()
    if reason:
        pytest.skip(reason)
    from pipeline.common.digests import sha256_file
    from pipeline.synthetic import standin, windows_disk

    root = tmp_path_factory.mktemp("install-media")
    images = [standin.StandinImage(index, name, windows_disk.generate(root / f"{release}.raw", release, size=STANDIN_DISK_SIZE))
              for index, name, release in STANDIN_IMAGES]
    iso = standin.build_iso(root / "standin-setup.iso", images, cache=standin_kernel)
    for image in images:
        image.disk.unlink()
    return iso, sha256_file(iso)


# -- the real authentication path: Keystone + a Keystone-authenticated Glance ----------------------------------


@pytest.fixture(scope="session")
def cloud(tmp_path_factory):
    """A local cloud for the session (LocalCloud: admin, a member project, an application credential, another
    project, the Nova and Cinder APIs), reached through its clouds.yaml exactly as users reach theirs."""
    from pipeline.glance.localcloud import LocalCloud

    local = LocalCloud(tmp_path_factory.mktemp("cloud"), keystone_port=free_port(), glance_port=free_port(),
                       consumer_ports=(free_port(), free_port()))
    local.up(timeout=180)
    yield local
    local.down()


def run_invoke(*args: str, state: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """The CLI as a user runs it, with a clean environment (no OS_* from the caller) plus `env`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    clean.update({"BAKERY_STATE_DIR": str(state), **(env or {})})
    return subprocess.run([str(PROJECT_ROOT / ".venv/bin/invoke"), *args], cwd=PROJECT_ROOT, env=clean, capture_output=True,
                          text=True, timeout=timeout)


# -- CLI access to the local cloud, for the tests of the real path ----------------------------------------------


# What the cloud tests were written for. Left to 'auto', the local cloud routes them through glance-direct,
# and concurrent imports on its one-process sqlite Glance can leave a task "pending" that never runs (a
# Glance-side stall; the bakery's wait is bounded by its import deadline). tests/test_import.py asks for routes.
DIRECT = {"method": "direct"}


@pytest.fixture
def account(cloud, tmp_path, monkeypatch):
    """CLI access to the local cloud through its clouds.yaml; the test's own family; its images deleted afterwards."""
    yield from account_on(cloud, tmp_path, monkeypatch)


def account_on(cloud, tmp_path, monkeypatch):
    """The `account` fixture's body, for any LocalCloud (tests/test_production_cloud.py has its own)."""
    family = f"w10c{uuid.uuid4().hex[:8]}"
    state = tmp_path / "state"
    env = {"OS_CLIENT_CONFIG_FILE": str(cloud.clouds_yaml)}

    class Account:
        def __init__(self):
            self.family, self.state, self.env, self.cloud = family, state, env, cloud

        def manifest(self, name: str = "manifest.yaml", *, size: int = 2 * MiB, visibility: str = "private", sparse_tail: int = 0,
                     upload: dict | None = DIRECT, **overrides) -> Path:
            """`upload=None` leaves the route to the bakery ('auto': what the cloud offers)."""
            image = tmp_path / f"{name}.raw"
            sha256 = make_image(image, size, seed=name, sparse_tail=sparse_tail)
            if upload is not None:
                overrides["upload"] = upload
            return write_manifest(tmp_path, image, sha256, name=name, family={"os_distro_major": self.family},
                                  image={"visibility": visibility, "min_ram": 2048}, **overrides)

        def run(self, *args: str, cloud_name: str | None = "bakery-member", env: dict | None = None, json_name: str = "report.json",
                timeout: float = 300):
            report = tmp_path / json_name
            cloud_args = ("--cloud", cloud_name) if cloud_name else ()
            proc = run_invoke(*args, *cloud_args, "--json", str(report), state=state, env={**self.env, **(env or {})}, timeout=timeout)
            return proc, (json.loads(report.read_text()) if report.exists() else None)

        def images(self, cloud_name: str = "bakery-admin") -> list[dict]:
            target = self.target(cloud_name)
            seen = {}
            base = {"os_distro_major": self.family, "visibility": "all"}  # community images are left out of plain lists
            for filters in (base, {**base, "os_hidden": True}):
                for image in target.glance.images.list(filters=filters):
                    seen[image["id"]] = dict(image)
            return list(seen.values())

        def target(self, cloud_name: str):
            from pipeline.glance.connect import connect

            monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(cloud.clouds_yaml))
            return connect(cloud_name)

    created = Account()
    yield created
    admin = created.target("bakery-admin")
    for image in created.images():
        try:
            admin.glance.images.delete(image["id"])
        except Exception:
            pass


def ok(proc, report):
    assert proc.returncode == 0, proc.stderr
    assert report["ok"] is True
    return report


def one_line_error(proc, *fragments: str) -> str:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and proc.stderr.splitlines()[-1] == errors[0], proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]
