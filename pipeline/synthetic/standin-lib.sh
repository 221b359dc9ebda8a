# Shared by both stand-in guests' /init (standin-init.sh plays Setup, standin-windows.sh plays Windows):
# sourced as /lib/standin.sh once busybox's applets, /proc, /sys and /dev are there.

say() { echo "standin: $*" > /dev/ttyS0; }

find_disk() {  # the target or system disk: virtio-blk, or SCSI/SATA/IDE
    for tries in $(seq 1 50); do
        for device in /dev/vda /dev/sda; do
            [ -b "$device" ] && { DISK=$device; return 0; }
        done
        sleep 0.2
    done
    return 1
}

firmware_facts() {  # firmware=bios|uefi secureboot=0|1 tpm=none|1|2
    firmware=bios secureboot=0
    if [ -d /sys/firmware/efi ]; then
        firmware=uefi
        mkdir -p /efivars && mount -t efivarfs efivarfs /efivars 2>/dev/null
        # an efivarfs file is 4 bytes of attributes, then the value
        secureboot=$(dd if=/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c bs=1 skip=4 count=1 2>/dev/null | od -An -tu1 | tr -d ' ')
    fi
    [ -e /sys/class/tpm/tpm0 ] && tpm=$(cat /sys/class/tpm/tpm0/tpm_version_major 2>/dev/null || echo 1) || tpm=none
    echo "firmware=$firmware secureboot=${secureboot:-0} tpm=$tpm"
}
