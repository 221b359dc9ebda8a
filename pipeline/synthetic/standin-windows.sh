#!/bin/busybox sh
# /init of the stand-in "Windows" booted from a synthetic disk (see standin_windows.py).
#
# Like Windows it needs a boot-start driver for the controller its system disk is on, or it stops with
# 0x7B INACCESSIBLE_BOOT_DEVICE (here: a kernel panic, which pvpanic reports). It reports the virtual
# hardware it found on the serial console. With the bakery's provisioning media in a drive it plays the
# runner: each step's log and exit code go to ProgramData\bakery\provision on the Windows volume, it
# reboots when a step asks, and ends with "sysprep" (a power-off). Booted without it, it is a new instance:
# it answers the QEMU guest agent and writes the ready marker on the serial port.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

. /lib/standin.sh
stop_error() { say "STOP $*"; sync; exit 1; }  # init exiting panics the kernel: Windows' blue screen

for module in $(cat /modules.order); do insmod "/modules/$module.ko" 2>/dev/null; done
mkdir -p /media /windows /tmp

disk_bus() {  # what Windows would need a boot driver for
    case "$DISK" in /dev/vd*) echo virtio-blk; return ;; esac
    path=$(readlink -f "/sys/block/${DISK##*/}/device")
    case "$path" in
        *virtio*) echo virtio-scsi ;;
        *ata*) driver=$(readlink -f "${path%%/ata*}/driver"); case "$driver" in *ahci*) echo sata ;; *) echo ide ;; esac ;;
        */host*) echo "scsi-$(basename "$(readlink -f "${path%%/host*}/driver")")" ;;  # e.g. LSI's sym53c8xx
        *) echo unknown ;;
    esac
}

pci_has() { cat /sys/bus/pci/devices/*/uevent | grep -qx "PCI_ID=$1"; }

hardware() {
    nic=none
    for dev in /sys/class/net/*; do
        [ -e "$dev/device/driver" ] && nic=$(basename "$(readlink -f "$dev/device/driver")")
    done
    if pci_has 8086:29C0; then machine=q35; elif pci_has 8086:1237; then machine=pc; else machine=unknown; fi
    video=none
    pci_has 1AF4:1050 && video=virtio
    pci_has 1234:1111 && video=vga
    pci_has 1013:00B8 && video=cirrus
    pci_has 1B36:0100 && video=qxl
    dmesg | grep -q "Hypervisor detected: Microsoft Hyper-V" && hyperv=yes || hyperv=no
    agent=no
    for port in /sys/class/virtio-ports/*; do [ "$(cat "$port/name" 2>/dev/null)" = org.qemu.guest_agent.0 ] && agent=yes; done
    echo "disk_bus=$(disk_bus) nic=${nic:-none} machine=$machine video=$video $(firmware_facts) hyperv=$hyperv agent=$agent"
}

mount_windows() {  # the NTFS partition with a Windows directory, read-write; names ignore case, as Windows'
    for part in "$DISK"[0-9]*; do
        lowntfs-3g -o ignore_case "$part" /windows 2>/dev/null || ntfs-3g "$part" /windows 2>/dev/null || continue
        [ -d /windows/Windows/System32 ] && return 0
        umount /windows
    done
    return 1
}

# -- the boot driver, as Windows finds it: from the registry, not from a file's presence --------------------

reg() {  # reg HIVE 'Key\Path' [Name]: the value (or, without a name, whether the key exists)
    if [ -n "$3" ]; then printf 'cd \\%s\nlsval %s\n' "$2" "$3"; else printf 'cd \\%s\n' "$2"; fi > /tmp/reg.cmds
    hivexsh -f /tmp/reg.cmds "$1" 2>/dev/null
}

boot_service() {  # the service Windows loads for the disk's controller; in-box ones always exist
    case "$1" in
        virtio-blk) echo viostor ;;
        virtio-scsi) echo vioscsi ;;
        sata|ide) echo in-box ;;  # storahci, atapi
        *) echo "$1" ;;  # no Windows this bakery makes has one (LSI 53C895A has had none since Windows 7)
    esac
}

controller_id() {  # the boot disk's controller as a PnP hardware id: PCI\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00
    device=$(readlink -f "/sys/block/${DISK##*/}/device")
    # up to the PCI function (a virtio device's own directory has a vendor too, but no subsystem ids)
    while [ "$device" != / ] && [ -n "$device" ] && [ ! -f "$device/subsystem_vendor" ]; do device=${device%/*}; done
    [ -f "$device/subsystem_vendor" ] || return 1
    hex() { tr -d '\n' < "$device/$1" | sed 's/^0x//' | tr a-f A-F; }
    printf 'PCI\\VEN_%s&DEV_%s&SUBSYS_%s%s&REV_%s' "$(hex vendor)" "$(hex device)" "$(hex subsystem_device)" \
        "$(hex subsystem_vendor)" "$(hex revision)"
}

pe_machine() {  # the COFF machine of a PE image (8664 amd64, 14C x86), or nothing when it is no PE image
    [ "$(dd if="$1" bs=1 count=2 2>/dev/null)" = MZ ] || return 0
    offset=$(od -An -tu4 -j60 -N4 "$1" | tr -d ' ')
    [ "$(dd if="$1" bs=1 skip="$offset" count=2 2>/dev/null)" = PE ] || return 0
    od -An -tx2 -j$((offset + 4)) -N2 "$1" | tr -d ' ' | tr a-f A-F | sed 's/^0*//'
}

boot_driver_problem() {  # $1 service: why Windows would not load it for its boot disk (nothing when it would)
    system=/windows/Windows/System32/config/SYSTEM
    software=/windows/Windows/System32/config/SOFTWARE
    set=$(printf 'ControlSet%03d' "$(reg "$system" Select Default)")
    key="$set\\Services\\$1"
    [ "$(reg "$system" "$key" Start)" = 0 ] || { echo "service $1 is not a boot-start service in $set"; return; }
    [ "$(reg "$system" "$key" Type)" = 1 ] || { echo "service $1 is not a kernel driver"; return; }
    [ "$(reg "$system" "$key" Group | tr A-Z a-z)" = "scsi miniport" ] || { echo "service $1 is not in the SCSI miniport group"; return; }
    image=$(reg "$system" "$key" ImagePath | tr '\\' / | sed -e 's#^/SystemRoot/##I' -e 's#^%SystemRoot%/##I')
    [ -n "$image" ] || image="System32/drivers/$1.sys"
    [ -f "/windows/Windows/$image" ] || { echo "its ImagePath $image is missing"; return; }
    arch=$(reg "$system" "$set\\Control\\Session Manager\\Environment" PROCESSOR_ARCHITECTURE)
    machine=$(pe_machine "/windows/Windows/$image")
    case "$arch:$machine" in AMD64:8664|X86:14C|ARM64:AA64) ;; *) echo "$image is not a $arch driver (PE machine '${machine:-none}')"; return ;; esac
    hwid=$(controller_id) || { echo "the disk's controller has no PCI id"; return; }
    if [ "$(reg "$software" 'Microsoft\Windows NT\CurrentVersion' CurrentVersion)" = 6.1 ]; then  # Windows 7 / 2008 R2
        cdd=$(echo "$hwid" | tr A-Z a-z | sed 's#\\#\##g')
        [ "$(reg "$system" "$set\\Control\\CriticalDeviceDatabase\\$cdd" Service)" = "$1" ] || { echo "no CriticalDeviceDatabase entry for $hwid"; return; }
    else
        reg "$system" "DriverDatabase\\DeviceIds\\$hwid" > /dev/null || { echo "no DriverDatabase entry for $hwid"; return; }
    fi
}

find_disk || stop_error "0x0000007B INACCESSIBLE_BOOT_DEVICE (no disk)"
HARDWARE=$(hardware)
say "hardware: $HARDWARE"
mount_windows || stop_error "0x0000007B INACCESSIBLE_BOOT_DEVICE (no Windows volume on $DISK)"
BUS=$(disk_bus)
SERVICE=$(boot_service "$BUS")
if [ "$SERVICE" != in-box ]; then
    PROBLEM=$(boot_driver_problem "$SERVICE")
    [ -z "$PROBLEM" ] || stop_error "0x0000007B INACCESSIBLE_BOOT_DEVICE (no boot driver for $BUS: $PROBLEM)"
fi

find_provisioning() {
    for device in /dev/sr*; do
        [ -b "$device" ] || continue
        mkdir -p "/media/${device##*/}"
        mount -t iso9660 -o ro "$device" "/media/${device##*/}" 2>/dev/null
        [ -f "/media/${device##*/}/bakery/plan.tsv" ] && { MEDIA="/media/${device##*/}/bakery"; return 0; }
    done
    return 1
}

# -- provisioning: the runner's contract (runner.ps1 does the same on Windows) --------------------------
RESULTS=/windows/ProgramData/bakery/provision

run_step() {  # $1 index, $2 name, $3 kind, $4 file, $5 arguments; writes NN-name.log and .exit
    base="$RESULTS/$(printf %02d "$1")-$2"
    case "$3" in
        powershell|cmd)  # the stand-in's steps are sh-compatible; sh's exit codes are 8 bits, so 194 is 3010
            sh "$MEDIA/files/$4" $5 > "$base.log" 2>&1; code=$?; [ "$code" = 194 ] && code=3010 ;;
        msi|exe|msu)
            mkdir -p "/windows/Program Files/$2"
            cp "$MEDIA/files/$4" "/windows/Program Files/$2/" && echo "installed $4 with: $5" > "$base.log"; code=$? ;;
        cloudbase-init)
            conf="/windows/Program Files/Cloudbase Solutions/Cloudbase-Init/conf"
            mkdir -p "$conf" && cp "$MEDIA/files/$4" "$conf/../" && cp "$MEDIA/files/$5" "$conf/cloudbase-init.conf"
            code=$?; echo "installed cloudbase-init from $4, configuration $5" > "$base.log" ;;
        windows-update) echo "no applicable updates (stand-in)" > "$base.log"; code=0 ;;
        *) echo "unknown step kind $3" > "$base.log"; code=1 ;;
    esac
    echo "$code" > "$base.exit"
    sync  # on disk before the next step, which may hang until the host stops the machine
}

provision() {
    mkdir -p "$RESULTS"
    . "$MEDIA/runner.cfg"
    NEXT=$(cat "$RESULTS/next" 2>/dev/null || echo 1)
    say "provisioning: resuming at step $NEXT"
    while IFS="$(printf '\t')" read -r index name kind file reboot repeat arguments; do
        [ "$index" = index ] && continue
        [ "$index" -lt "$NEXT" ] && continue
        say "step $index $name ($kind)"
        run_step "$index" "$name" "$kind" "$file" "$arguments"
        code=$(cat "$RESULTS/$(printf %02d "$index")-$name.exit")  # $? is 8 bits
        if [ "$code" = 3010 ] && [ "$repeat" = yes ]; then
            say "step $index $name asks to run again after a reboot"; sync; reboot -f
        fi
        if [ "$code" != 0 ] && [ "$code" != 3010 ]; then
            say "step $index $name failed with exit code $code"; echo "$index" > "$RESULTS/failed"; sync; poweroff -f
        fi
        echo $((index + 1)) > "$RESULTS/next"
        if [ "$code" = 3010 ] || [ "$reboot" = yes ]; then
            say "rebooting after step $index $name"; sync; reboot -f
        fi
    done < "$MEDIA/plan.tsv"
    echo "sysprep $SYSPREP_ARGUMENTS" > "$RESULTS/sysprep.log"
    [ -n "$SYSPREP_UNATTEND" ] && cp "$MEDIA/$SYSPREP_UNATTEND" /windows/Windows/System32/Sysprep/unattend.xml 2>/dev/null
    echo done > "$RESULTS/finished"
    say "provisioning finished; sysprep $SYSPREP_ARGUMENTS"
    sync; umount /windows; poweroff -f
}

LAUNCHER=/windows/Windows/Setup/Scripts/bakery-provision.cmd
if find_provisioning; then  # as on Windows: the media alone does nothing, the planted launcher starts the runner
    [ -f "$LAUNCHER" ] && provision
    say "provisioning media found, but no launcher in Windows\\Setup\\Scripts: nothing runs"
fi

# -- a new instance: the guest agent answers, and the first-boot script writes the ready marker ------------
agent_port() {
    for port in /sys/class/virtio-ports/*; do
        [ "$(cat "$port/name" 2>/dev/null)" = org.qemu.guest_agent.0 ] && { echo "/dev/${port##*/}"; return 0; }
    done
    return 1
}

guest_agent() {  # guest-sync and guest-ping, as qemu-ga answers them
    exec 3<>"$1"
    while true; do  # a read while no host end is connected returns end-of-file at once: wait for one
        while read -r line <&3; do
            case "$line" in
                *guest-sync*) id=$(echo "$line" | sed -n 's/.*"id": *\([0-9]*\).*/\1/p'); echo "{\"return\": $id}" >&3 ;;
                *guest-ping*) echo '{"return": {}}' >&3 ;;
                *guest-get-osinfo*) echo '{"return": {"id": "mswindows", "name": "Microsoft Windows (bakery stand-in)"}}' >&3 ;;
                *) echo '{"error": {"class": "CommandNotFound", "desc": "not in the stand-in"}}' >&3 ;;
            esac
        done
        sleep 0.5
    done
}

ready_nonce() {  # this boot's nonce: the SMBIOS OEM string (type 11) the host gave, which no firmware prints
    for entry in /sys/firmware/dmi/entries/11-*/raw; do
        [ -f "$entry" ] && tr '\000' '\n' < "$entry" | sed -n 's/.*bakery-ready-nonce=\([0-9a-fA-F]*\).*/\1/p'
    done | head -n 1
}

PORT=$(agent_port) && guest_agent "$PORT" &
umount /windows
NONCE=$(ready_nonce)
say "BAKERY-READY${NONCE:+ $NONCE} $HARDWARE"
while true; do sleep 3600; done
