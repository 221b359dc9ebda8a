"""Make a synthetic Windows disk bootable: the stand-in "Windows" that canary and provisioning VMs boot.

A synthetic disk (windows_disk.py) has Windows' partition layout and no boot code. This writes what the
firmware needs to start the stand-in from the disk itself, over whatever bus the VM gives the disk:
- BIOS (MBR): GRUB's boot.img in the MBR's code area and its core.img (biosdisk, part_msdos, ntfs, linux)
  in the gap before the first partition, where Windows' MBR code would chain the System Reserved
  partition's bootmgr; kernel and initrd are files on that NTFS partition, beside the placeholder bootmgr.
- UEFI (GPT): a signed unified kernel image as \\EFI\\Boot\\bootx64.efi and \\EFI\\Microsoft\\Boot\\bootmgfw.efi
  on the ESP; OVMF boots it as it boots Windows' boot manager, with Secure Boot on when the snakeoil key is
  enrolled (OVMF_VARS_4M.snakeoil.fd).

The guest's /init (standin-windows.sh) plays a booted Windows: it stops with 0x7B when no boot driver fits
the disk's controller, judged from the registry as Windows judges it (the control set Select\\Default names, a
boot-start kernel service in "SCSI miniport" whose ImagePath is a PE image of the right architecture, and the
controller's PCI id mapped to it), reports the virtual hardware it found, runs the provisioning runner's steps from
the config media, and, booted as an instance, answers the guest agent and writes a ready marker.
"""

from __future__ import annotations

import shutil
import struct
import tempfile
from pathlib import Path

from pipeline.common.run import require_tool, run
from pipeline.diskimage import fuse
from pipeline.synthetic import standin
from pipeline.windows import volume

INIT_SCRIPT = Path(__file__).with_name("standin-windows.sh")
GRUB_DIR = Path("/usr/lib/grub/i386-pc")
BOOT_DIR = "bakery-standin"  # on the System Reserved partition (BIOS)
NTFS_3G = Path("/usr/bin/ntfs-3g")
# Windows' namespace ignores case (lowntfs-3g -o ignore_case), and Windows finds its boot drivers in the
# registry (hivexsh reads SYSTEM): the stand-in decides 0x7B from the same facts Windows does.
LOWNTFS_3G = Path("/usr/bin/lowntfs-3g")
HIVEXSH = Path("/usr/bin/hivexsh")
# hivex converts key and value names with iconv (latin-1 and UTF-16): glibc loads those converters at run time.
GCONV = Path("/usr/lib/x86_64-linux-gnu/gconv")
GCONV_FILES = tuple(GCONV / name for name in ("gconv-modules", "gconv-modules.cache", "ISO8859-1.so", "UTF-16.so"))
# disk buses and controllers, NICs, the guest agent's virtio-serial port, FUSE for ntfs-3g, efivarfs
MODULES = ("virtio_pci", "virtio_blk", "virtio_scsi", "sd_mod", "ahci", "ata_piix", "sr_mod", "isofs", "pvpanic_mmio",
           "pvpanic_pci", "efivarfs", "virtio_net", "e1000", "e1000e", "8139cp", "8139too", "ne2k_pci", "virtio_console",
           "fuse", "sym53c8xx", "pcnet32")
KERNEL_CMDLINE = "console=ttyS0 panic=0 loglevel=3"
# GRUB's core.img starts at this sector, past the sectors the stand-in Setup keeps its marker and phase in (40, 41)
CORE_SECTOR = 64
BOOT_KERNEL_SECTOR = 0x5C  # in boot.img: the LBA of core.img's first sector
DISKBOOT_BLOCKLIST = 12  # in core.img's first sector, from its end: start LBA (8 bytes), sectors (2), segment (2)


def make_bootable(disk: Path, *, cache: Path) -> Path:
    """Write the stand-in's boot path into a raw synthetic Windows disk, in place."""
    for tool, package in (("mcopy", "mtools"), ("sbsign", "sbsigntool")):
        require_tool(tool, package)
    layout = volume.read_layout(disk, image_size=disk.stat().st_size, label_for_errors=str(disk))
    with tempfile.TemporaryDirectory(prefix="standin-boot-", dir=disk.parent) as scratch:
        scratch = Path(scratch)
        kernel_root = standin.kernel_tree(cache)
        vmlinuz = next((kernel_root / "boot").glob("vmlinuz-*"))
        initrd = standin.initramfs(kernel_root, scratch, init=INIT_SCRIPT, modules=MODULES, programs=(NTFS_3G, LOWNTFS_3G, HIVEXSH),
                                     data=tuple(path for path in GCONV_FILES if path.exists()))
        if layout.label == "gpt":
            _esp_boot(disk, layout, standin.signed_uki(vmlinuz, initrd, scratch, KERNEL_CMDLINE), scratch)
        else:
            _mbr_boot(disk, layout, vmlinuz, initrd, scratch)
    return disk


def _esp_boot(disk: Path, layout: volume.Layout, bootloader: Path, scratch: Path) -> None:
    esp = next(p for p in layout.partitions if p.type.upper() == volume.ESP_GPT)
    with fuse.exposed(disk, "raw", mountpoint=scratch / "esp", window=esp, writable=True):
        for target in ("EFI/Microsoft/Boot/bootmgfw.efi", "EFI/Boot/bootx64.efi"):
            run(["mcopy", "-o", "-i", scratch / "esp", bootloader, f"::/{target}"])


def _mbr_boot(disk: Path, layout: volume.Layout, vmlinuz: Path, initrd: Path, scratch: Path) -> None:
    require_tool("grub-mkimage", "grub-common")
    if not (GRUB_DIR / "boot.img").is_file():
        raise RuntimeError(f"{GRUB_DIR / 'boot.img'} is missing: install grub-pc-bin (make deps does)")
    system = next((p for p in layout.partitions if p.bootable), layout.partitions[0])  # System Reserved
    with fuse.exposed(disk, "raw", mountpoint=scratch / "system", window=system, writable=True):
        with volume.ntfs_mounted(scratch / "system", scratch / "mnt", writable=True, label_for_errors=str(disk)) as root:
            (root / BOOT_DIR).mkdir(exist_ok=True)
            shutil.copyfile(vmlinuz, root / BOOT_DIR / "vmlinuz")
            shutil.copyfile(initrd, root / BOOT_DIR / "initrd.gz")
    config = scratch / "grub-early.cfg"
    config.write_text(f"set root=(hd0,msdos{system.number})\nlinux /{BOOT_DIR}/vmlinuz {KERNEL_CMDLINE}\n"
                      f"initrd /{BOOT_DIR}/initrd.gz\nboot\n")
    core = scratch / "core.img"
    run(["grub-mkimage", "-O", "i386-pc", "-o", core, "-p", f"(hd0,msdos{system.number})/{BOOT_DIR}", "-c", config,
         "biosdisk", "part_msdos", "ntfs", "linux", "boot"])
    image = bytearray(core.read_bytes())
    gap = min(p.start for p in layout.partitions) - CORE_SECTOR * 512
    if len(image) > gap:
        raise RuntimeError(f"GRUB's core.img ({len(image)} bytes) does not fit before the first partition ({gap} bytes)")
    boot = bytearray((GRUB_DIR / "boot.img").read_bytes()[:440])  # the code; the disk signature and the table stay
    # where boot.img finds core.img, and where core.img's first sector finds the rest (what grub-bios-setup patches)
    struct.pack_into("<Q", boot, BOOT_KERNEL_SECTOR, CORE_SECTOR)
    struct.pack_into("<Q", image, 512 - DISKBOOT_BLOCKLIST, CORE_SECTOR + 1)
    with open(disk, "r+b") as target:
        target.write(boot)
        target.seek(CORE_SECTOR * 512)
        target.write(image)
