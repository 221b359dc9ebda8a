"""A stand-in for a Windows installation ISO, built from Debian packages, for the QEMU runner's tests.

Real Windows Setup cannot run under TCG in test time, so this ISO carries a tiny Linux guest (Debian's
kernel and busybox-static) whose /init (standin-init.sh) plays Setup: it reads autounattend.xml from the
config media, applies the image the answer file names from `sources/` to the target disk, reboots as Setup
does and powers off. The "images" it applies are real synthetic Windows disks (windows_disk.py), so the
chain after the install (inspection, virtio refresh, lint, publish) runs on a disk that looks installed.

The ISO boots like a real install ISO under both firmwares: isolinux for SeaBIOS, and for OVMF an El Torito
EFI image whose BOOTX64.EFI is a unified kernel image, signed with Debian OVMF's snakeoil key so that it
also boots with Secure Boot on (OVMF_VARS_4M.snakeoil.fd enrolls that key).
"""

from __future__ import annotations

import gzip
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.common.run import require_tool, run

INIT_SCRIPT = Path(__file__).with_name("standin-init.sh")
INIT_LIBRARY = Path(__file__).with_name("standin-lib.sh")  # /lib/standin.sh, sourced by either /init
BUSYBOX = Path("/usr/bin/busybox")  # busybox-static: the one binary the initramfs needs
ISOLINUX = Path("/usr/lib/ISOLINUX/isolinux.bin")
LDLINUX = Path("/usr/lib/syslinux/modules/bios/ldlinux.c32")
EFI_STUB = Path("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")
SNAKEOIL_KEY = Path("/usr/share/ovmf/PkKek-1-snakeoil.key")
SNAKEOIL_CERT = Path("/usr/share/ovmf/PkKek-1-snakeoil.pem")
SNAKEOIL_PASSPHRASE = "snakeoil"  # public, documented in Debian's ovmf package
KERNEL_CMDLINE = "console=ttyS0 panic=0 loglevel=3"
# What the stand-in needs: the disk buses, the CD-ROM, ISO 9660, pvpanic and efivarfs (Secure Boot state).
MODULES = ("virtio_pci", "virtio_blk", "virtio_scsi", "sd_mod", "ahci", "ata_piix", "sr_mod", "isofs", "pvpanic_mmio",
           "pvpanic_pci", "efivarfs")
VOLUME_LABEL = "STANDIN_SETUP"


@dataclass(frozen=True)
class StandinImage:
    index: int
    name: str  # as in install.wim's /IMAGE/NAME
    disk: Path  # a raw disk the stand-in "applies"


def build_iso(destination: Path, images: list[StandinImage], *, cache: Path) -> Path:
    """Write the stand-in install ISO to destination."""
    for tool, package in (("xorriso", "xorriso"), ("mformat", "mtools"), ("objcopy", "binutils"), ("sbsign", "sbsigntool"),
                          ("apt-get", "apt")):
        require_tool(tool, package)
    kernel_root = kernel_tree(cache)
    vmlinuz = next((kernel_root / "boot").glob("vmlinuz-*"))
    with tempfile.TemporaryDirectory(prefix="standin-", dir=destination.parent) as scratch:
        scratch = Path(scratch)
        tree = scratch / "iso"
        (tree / "boot").mkdir(parents=True)
        (tree / "isolinux").mkdir()
        (tree / "sources").mkdir()
        initrd = initramfs(kernel_root, scratch, init=INIT_SCRIPT, modules=MODULES)
        shutil.copy(vmlinuz, tree / "boot" / "vmlinuz")
        shutil.copy(initrd, tree / "boot" / "initrd.gz")
        shutil.copy(ISOLINUX, tree / "isolinux")
        shutil.copy(LDLINUX, tree / "isolinux")
        (tree / "isolinux" / "isolinux.cfg").write_text(
            f"default setup\nprompt 0\ntimeout 0\nlabel setup\n  kernel /boot/vmlinuz\n  initrd /boot/initrd.gz\n"
            f"  append {KERNEL_CMDLINE}\n"
        )
        _efi_boot_image(signed_uki(vmlinuz, initrd, scratch), tree / "efiboot.img")
        _install_images(images, tree / "sources")
        run(["xorriso", "-as", "mkisofs", "-quiet", "-o", destination, "-V", VOLUME_LABEL, "-J", "-r",
             "-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat", "-no-emul-boot", "-boot-load-size", "4",
             "-boot-info-table", "-eltorito-alt-boot", "-e", "efiboot.img", "-no-emul-boot", tree], timeout=300)
    return destination


def kernel_tree(cache: Path) -> Path:
    """Debian's current amd64 kernel package, downloaded and unpacked once into the cache."""
    depends = run(["apt-cache", "depends", "linux-image-amd64"]).stdout.decode()
    match = re.search(r"Depends: (linux-image-[0-9][^\s]*-amd64)", depends)
    if not match:
        raise RuntimeError("apt-cache cannot resolve linux-image-amd64; run apt-get update")
    package = match.group(1)
    root = cache / package
    if (root / "boot").is_dir():
        return root
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kernel-", dir=cache) as download:
        run(["apt-get", "download", "-q", package], cwd=Path(download), timeout=600)
        deb = next(Path(download).glob("*.deb"))
        partial = Path(download) / "tree"
        run(["dpkg-deb", "-x", deb, partial], timeout=600)
        partial.replace(root)
    return root


def _module_paths(kernel_root: Path) -> dict[str, Path]:
    return {p.name.removesuffix(".ko").replace("-", "_"): p for p in (kernel_root / "lib" / "modules").rglob("*.ko")}


def _depends(module: Path) -> list[str]:
    """A module's dependencies, from the `depends=` entry of its .modinfo (what depmod would read)."""
    match = re.search(rb"\0depends=([^\0]*)\0", module.read_bytes())
    return [d.replace("-", "_") for d in match.group(1).decode().split(",") if d] if match else []


def _load_order(names: tuple[str, ...], available: dict[str, Path]) -> list[str]:
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order or name not in available:
            return  # built into the kernel, or already queued
        for dependency in _depends(available[name]):
            visit(dependency)
        order.append(name)

    for name in names:
        visit(name)
    return order


def initramfs(kernel_root: Path, scratch: Path, *, init: Path, modules: tuple[str, ...],
              programs: tuple[Path, ...] = (), data: tuple[Path, ...] = ()) -> Path:
    """A gzip'd newc initramfs: busybox, `init` as /init, the modules (with what they depend on, in load
    order), dynamically linked `programs` with the libraries ldd names for them, and `data` files (what those
    load at run time, such as iconv's modules) at their own paths."""
    root = scratch / "initramfs"
    for directory in ("bin", "dev", "proc", "sys", "modules", "mnt", "etc"):
        (root / directory).mkdir(parents=True)
    (root / "etc" / "mtab").symlink_to("/proc/mounts")
    shutil.copy(BUSYBOX, root / "bin" / "busybox")
    shutil.copy(init, root / "init")
    (root / "init").chmod(0o755)
    (root / "lib").mkdir(exist_ok=True)
    shutil.copy(INIT_LIBRARY, root / "lib" / "standin.sh")
    for program in programs:
        _copy_program(program, root)
    for path in data:
        target = root / str(path).lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path.resolve(), target)
    available = _module_paths(kernel_root)
    order = _load_order(modules, available)
    for name in order:
        shutil.copy(available[name], root / "modules" / f"{name}.ko")
    (root / "modules.order").write_text("\n".join(order) + "\n")
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    archive = run([BUSYBOX, "cpio", "-o", "-H", "newc"], input="\n".join(files).encode() + b"\n", cwd=root).stdout
    target = scratch / "initrd.gz"
    target.write_bytes(gzip.compress(archive, compresslevel=6, mtime=0))
    return target


def _copy_program(program: Path, root: Path) -> None:
    """The program at the same path in the initramfs, and every shared library it loads (ldd's view)."""
    needed = [program]
    for line in run(["ldd", program]).stdout.decode().splitlines():
        match = re.search(r"(/\S+) \(0x", line)
        if match:
            needed.append(Path(match.group(1)))
    for path in needed:
        target = root / str(path).lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path.resolve(), target)


def signed_uki(vmlinuz: Path, initrd: Path, scratch: Path, kernel_cmdline: str = KERNEL_CMDLINE) -> Path:
    """Kernel, initrd and command line in one EFI binary (systemd's stub), signed for Secure Boot."""
    cmdline = scratch / "cmdline"
    cmdline.write_text(kernel_cmdline + "\0")
    osrel = scratch / "os-release"
    osrel.write_text('NAME="bakery stand-in setup"\nID=bakery-standin\n')
    unsigned = scratch / "standin-unsigned.efi"
    run(["objcopy",
         "--add-section", f".osrel={osrel}", "--change-section-vma", ".osrel=0x20000",
         "--add-section", f".cmdline={cmdline}", "--change-section-vma", ".cmdline=0x30000",
         "--add-section", f".linux={vmlinuz}", "--change-section-vma", ".linux=0x2000000",
         "--add-section", f".initrd={initrd}", "--change-section-vma", ".initrd=0x3000000",
         EFI_STUB, unsigned])
    key = scratch / "snakeoil.key"
    run(["openssl", "rsa", "-in", SNAKEOIL_KEY, "-passin", f"pass:{SNAKEOIL_PASSPHRASE}", "-out", key])
    signed = scratch / "BOOTX64.EFI"
    run(["sbsign", "--key", key, "--cert", SNAKEOIL_CERT, "--output", signed, unsigned])
    return signed


def _efi_boot_image(bootloader: Path, target: Path) -> None:
    """The FAT image El Torito hands to UEFI firmware, with \\EFI\\BOOT\\BOOTX64.EFI in it."""
    size_kib = (bootloader.stat().st_size // 1024) + 2048
    run(["mformat", "-i", target, "-C", "-T", str(size_kib * 2), "-h", "2", "-s", "32", "::"])
    run(["mmd", "-i", target, "::/EFI", "::/EFI/BOOT"])
    run(["mcopy", "-i", target, bootloader, "::/EFI/BOOT/BOOTX64.EFI"])


def _install_images(images: list[StandinImage], sources: Path) -> None:
    """What install.wim is to Setup: numbered, named images; here gzip'd raw disks and a tab-separated index."""
    lines = []
    for image in images:
        name = f"install-{image.index}.raw.gz"
        with open(image.disk, "rb") as src, open(sources / name, "wb") as raw_out, \
                gzip.GzipFile(fileobj=raw_out, mode="wb", compresslevel=1, mtime=0) as dst:
            shutil.copyfileobj(src, dst, 1024 * 1024)
        lines.append(f"{image.index}\t{image.name}\t{name}\n")
    (sources / "images.txt").write_text("".join(lines))
