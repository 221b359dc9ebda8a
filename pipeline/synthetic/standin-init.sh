#!/bin/busybox sh
# /init of the stand-in guest that plays Windows Setup for the tests (see standin.py).
#
# Like Setup it finds the answer file on removable media, applies the image it names from the install
# media's sources/ to the target disk, reboots a few times (the phase is kept on the disk, as Setup keeps
# its state there) and finally powers the machine off. A STANDIN_MODE in standin.cfg on the config media
# makes it hang, panic or never power off instead, so the runner's failure paths can be exercised.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

. /lib/standin.sh

for module in $(cat /modules.order); do insmod "/modules/$module.ko" 2>/dev/null; done

MARKER_SECTOR=40
PHASE_SECTOR=41
mkdir -p /media /config /install

find_media() {
    for tries in $(seq 1 50); do
        for device in /dev/sr*; do
            [ -b "$device" ] || continue
            mkdir -p "/media/${device##*/}"
            grep -q " /media/${device##*/} " /proc/mounts || mount -t iso9660 -o ro "$device" "/media/${device##*/}" 2>/dev/null
        done
        CONFIG=$(ls -d /media/*/autounattend.xml 2>/dev/null | head -n 1)
        INSTALL=$(ls -d /media/*/sources/images.txt 2>/dev/null | head -n 1)
        [ -n "$CONFIG" ] && [ -n "$INSTALL" ] && return 0
        sleep 0.2
    done
    return 1
}

read_sector() { dd if="$DISK" bs=512 skip="$1" count=1 2>/dev/null | tr -d '\000'; }
write_sector() { printf '%-511s\n' "$2" | dd of="$DISK" bs=512 seek="$1" count=1 conv=notrunc 2>/dev/null; sync; }

answer_value() {  # the <Value> that follows <Key>$1</Key> in the answer file
    grep -A1 "<Key>$1</Key>" "$CONFIG" | sed -n 's:.*<Value>\(.*\)</Value>.*:\1:p' | head -n 1
}

find_media || { say "no config media with autounattend.xml and install media found"; poweroff -f; }
find_disk || { say "no target disk"; poweroff -f; }
CONFIG_DIR=${CONFIG%/*}
STANDIN_MODE=normal
STANDIN_REBOOTS=2
[ -f "$CONFIG_DIR/standin.cfg" ] && . "$CONFIG_DIR/standin.cfg"
PHASE=$(read_sector $PHASE_SECTOR | sed -n 's/^phase=\([0-9]*\).*/\1/p')
PHASE=${PHASE:-0}
say "phase $PHASE on $DISK, answer file $CONFIG, mode $STANDIN_MODE"

case "$STANDIN_MODE" in
    hang) say "hanging (as a Setup stuck on a prompt would)"; while true; do sleep 3600; done ;;
    panic) say "panicking"; exit 1 ;;  # init exiting panics the kernel; pvpanic reports it
esac

if [ "$PHASE" = 0 ]; then
    INDEX=$(answer_value /IMAGE/INDEX)
    NAME=$(answer_value /IMAGE/NAME)
    IMAGES=${INSTALL%/images.txt}
    if [ -n "$INDEX" ]; then
        LINE=$(awk -F '\t' -v i="$INDEX" '$1 == i' "$INSTALL")
    else
        LINE=$(awk -F '\t' -v n="$NAME" '$2 == n' "$INSTALL")
    fi
    [ -n "$LINE" ] || { say "no image ${INDEX:-$NAME} in install.wim"; poweroff -f; }
    FILE=$(echo "$LINE" | cut -f3)
    say "applying image ${INDEX:-$NAME} ($FILE) to $DISK"
    gunzip -c "$IMAGES/$FILE" | dd of="$DISK" bs=1M conv=notrunc 2>/dev/null
    ANSWER_SHA256=$(sha256sum "$CONFIG" | cut -d' ' -f1)
    write_sector $MARKER_SECTOR "BAKERY-STANDIN answer=$ANSWER_SHA256 image=${INDEX:-$NAME} $(firmware_facts)"
fi

if [ "$PHASE" -lt "$STANDIN_REBOOTS" ]; then
    write_sector $PHASE_SECTOR "phase=$((PHASE + 1))"
    say "setup phase $PHASE done, rebooting"
    reboot -f
fi
write_sector $PHASE_SECTOR "phase=done"
if [ "$STANDIN_MODE" = noshutdown ]; then
    say "setup complete, but not powering off"
    while true; do sleep 3600; done
fi
say "setup complete, powering off"
poweroff -f
