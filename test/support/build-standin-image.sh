#!/usr/bin/env bash
# Builds the stand-in base image used by the end-to-end tests in place of the
# NixOS image that `nix build` produces (NixOS cannot be built without the
# binary cache). The result is a real bootable UEFI disk:
#
#   GPT disk, one EF00 partition holding a vfat ESP with
#     EFI/BOOT/BOOTX64.EFI              systemd-boot
#     loader/loader.conf                timeout 0
#     loader/entries/standin.conf       Debian kernel + busybox initramfs
#
# The initramfs /init mounts the whole-disk ext4 filesystem labelled ivm-var
# at /var, reports what it sees on the serial console as machine-readable
# "IVM-..." lines (see test/support/standin.ts for the parser) and powers off.
# A guest whose hostname (from /var/identity) ends in "-agent" first answers
# the QEMU guest agent protocol on its virtio port, reporting the address
# 192.0.2.77/24 on eth0, until libvirt has asked it for the interfaces; after
# DHCP it serves SSH (Debian's sshd, keys from /var/identity) until an admin
# login touches /tmp/ivm-ssh-done.
# At every boot /init grows the mounted /var filesystem to its disk with
# Debian's resize2fs, online, as systemd-growfs does for NixOS (autoResize, see
# modules/filesystem.nix), and reports its size (IVM-VARFS). A guest whose
# hostname ends in "-hold" stays up after its report until the ACPI power
# button is pressed (virsh shutdown, virsh reboot) or 240 s pass.
#
# Everything comes from Debian packages (busybox-static, systemd-boot-efi,
# linux-image-amd64, gdisk, dosfstools, mtools, cpio, openssh-server, e2fsprogs); no root-only devices,
# no loop mounts, no network. Timestamps and identifiers are fixed so that the
# same inputs give the same bytes; VARIANT is baked into the image so that two
# variants always differ.
#
# Usage: build-standin-image.sh OUT_DIR [VARIANT]
# Prints only errors, then a final line with the path of OUT_DIR/standin.qcow2.
set -euo pipefail

die() { echo "build-standin-image: $*" >&2; exit 1; }

[[ $# -ge 1 && $# -le 2 ]] || die "usage: $0 OUT_DIR [VARIANT]"
OUT_DIR=$1
VARIANT=${2:-a}
[[ $VARIANT =~ ^[A-Za-z0-9._-]+$ ]] || die "VARIANT must match [A-Za-z0-9._-]+ (got '$VARIANT')"

export PATH=$PATH:/usr/sbin:/sbin
for tool in busybox sgdisk mkfs.vfat mcopy mmd cpio gzip qemu-img modprobe; do
  command -v "$tool" >/dev/null 2>&1 || die "missing tool: $tool"
done

BUSYBOX=/bin/busybox
[[ -x $BUSYBOX ]] || BUSYBOX=$(command -v busybox)
# The initramfs needs a static busybox (package busybox-static).
if command -v file >/dev/null 2>&1 && ! file -L "$BUSYBOX" | grep -q 'statically linked'; then
  die "$BUSYBOX is not statically linked (install busybox-static)"
fi

SDBOOT=/usr/lib/systemd/boot/efi/systemd-bootx64.efi
[[ -f $SDBOOT ]] || die "missing $SDBOOT (install systemd-boot-efi)"

# Newest Debian kernel in /boot with its modules.
KERNEL=""
for k in /boot/vmlinuz-*; do
  [[ -f $k ]] || continue
  v=${k#/boot/vmlinuz-}
  [[ -d /lib/modules/$v ]] || continue
  KERNEL=$k
done
[[ -n $KERNEL ]] || die "no /boot/vmlinuz-* with matching /lib/modules (install linux-image-amd64)"
KVER=${KERNEL#/boot/vmlinuz-}
[[ -r $KERNEL ]] || die "$KERNEL is not readable"

mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ivm-standin.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# Fixed time for every timestamp that ends up in the image (2024-01-01).
EPOCH=1704067200
export SOURCE_DATE_EPOCH=$EPOCH
export TZ=UTC

# ---------------------------------------------------------------- initramfs
RD=$WORK/initramfs
mkdir -p "$RD"/{bin,dev,proc,sys,var,tmp,etc,lib/modules}
cp "$BUSYBOX" "$RD/bin/busybox"
for applet in sh mount umount mkdir cat echo printf sleep sync poweroff insmod \
              findfs base64 stat ls dd ip udhcpc sed tr head tail dmesg rm \
              basename readlink test [ true false cp mv wc date uname timeout id touch chmod; do
  ln -s busybox "$RD/bin/$applet"
done

# Modules in load order, deduplicated; a module that fails to load (e.g. a CPU
# specific crc32c) is skipped at boot.
: >"$RD/etc/modules"
declare -A seen=()
# button and evdev: the ACPI power button as an input device (/dev/input/event*), which a
# *-hold guest waits on.
for mod in virtio_pci virtio_blk crc32c_generic ext4 virtio_net virtio_console button evdev; do
  deps=$(modprobe -S "$KVER" --show-depends "$mod") || die "modprobe -S $KVER --show-depends $mod failed"
  while read -r cmd path _; do
    [[ $cmd == insmod ]] || continue
    name=$(basename "$path")
    [[ -n ${seen[$name]:-} ]] && continue
    seen[$name]=1
    case $name in
      *.ko)     cp "$path" "$RD/lib/modules/$name" ;;
      *.ko.xz)  name=${name%.xz};  xz -dc "$path" >"$RD/lib/modules/$name" ;;
      *.ko.zst) name=${name%.zst}; zstd -qdc "$path" >"$RD/lib/modules/$name" ;;
      *.ko.gz)  name=${name%.gz};  gzip -dc "$path" >"$RD/lib/modules/$name" ;;
      *) die "unexpected module file $path" ;;
    esac
    echo "$name" >>"$RD/etc/modules"
  done <<<"$deps"
done

echo "$VARIANT" >"$RD/etc/standin-variant"

cat >"$RD/etc/udhcpc.script" <<'EOF'
#!/bin/sh
# udhcpc event script: put the leased address on the interface and record it.
case "$1" in
  bound|renew)
    ip addr add "$ip/${mask:-24}" dev "$interface"
    echo "$ip" >/tmp/dhcp-ip ;;
esac
exit 0
EOF
chmod 0755 "$RD/etc/udhcpc.script"

# The QEMU guest agent protocol, as much of it as `virsh domifaddr --source
# agent` uses: libvirt sends {"execute":"guest-sync","arguments":{"id":N}} and
# wants {"return": N} back, then the command. Answers until asked for the
# interfaces, reporting 192.0.2.77/24 on eth0 (which /init has put there).
cat >"$RD/etc/agent.sh" <<'EOF'
#!/bin/sh
port=""
for p in /sys/class/virtio-ports/*; do
  [ "$(cat "$p/name" 2>/dev/null)" = org.qemu.guest_agent.0 ] && port=/dev/${p##*/}
done
[ -n "$port" ] && [ -c "$port" ] || { echo "IVM-AGENT error no guest agent port"; exit 1; }
mac=$(cat /sys/class/net/eth0/address)
exec 3<>"$port"
while :; do
  line=""
  IFS= read -r line <&3 || [ -n "$line" ] || { sleep 0.2; continue; }
  case $line in
    *'"guest-sync'*)
      id=$(echo "$line" | sed -n 's/.*"id" *: *\([0-9][0-9]*\).*/\1/p')
      printf '{"return": %s}\n' "${id:-0}" >&3 ;;
    *'"guest-network-get-interfaces"'*)
      printf '{"return": [{"name": "lo", "hardware-address": "00:00:00:00:00:00", "ip-addresses": [{"ip-address-type": "ipv4", "ip-address": "127.0.0.1", "prefix": 8}]}, {"name": "eth0", "hardware-address": "%s", "ip-addresses": [{"ip-address-type": "ipv4", "ip-address": "192.0.2.77", "prefix": 24}]}]}\n' "$mac" >&3
      echo "IVM-AGENT answered guest-network-get-interfaces ip=192.0.2.77"
      exit 0 ;;
    *) printf '{"return": {}}\n' >&3 ;;
  esac
done
EOF
chmod 0755 "$RD/etc/agent.sh"

# sshd for guests named *-agent (see /init): Debian's sshd and the libraries it
# links, run the way ivm's NixOS modules run it: the host key and each
# account's authorized keys read from /var/identity, no passwords.
# A dynamically linked Debian program into the initramfs at the same path, with
# the libraries ldd names (and the loader).
copy_with_libs() {
  local program=$1 lib
  mkdir -p "$RD$(dirname "$program")"
  cp "$program" "$RD$program"
  while read -r lib; do
    [[ -n $lib ]] || continue
    mkdir -p "$RD$(dirname "$lib")"
    cp -L "$lib" "$RD$lib"
  done < <(ldd "$program" | sed -n 's/.*=> \(\/[^ ]*\) .*/\1/p; s/^[[:space:]]*\(\/[^ ]*\) (.*/\1/p' | sort -u)
}
SSHD=/usr/sbin/sshd
[[ -x $SSHD ]] || die "missing $SSHD (install openssh-server)"
mkdir -p "$RD/usr/sbin" "$RD/etc/ssh" "$RD/run/sshd" "$RD/home/admin" "$RD/home/user"
copy_with_libs "$SSHD"
# resize2fs grows the mounted /var at boot (online, as systemd-growfs does); it
# finds the mount in /proc/mounts (and /etc/mtab, a link to it).
RESIZE2FS=/sbin/resize2fs
[[ -x $RESIZE2FS ]] || die "missing $RESIZE2FS (install e2fsprogs)"
copy_with_libs "$RESIZE2FS"
ln -s /proc/mounts "$RD/etc/mtab"
cat >"$RD/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
sshd:x:100:65534:privilege separation:/run/sshd:/bin/false
admin:*:1000:100:admin:/home/admin:/bin/sh
user:*:1001:100:user:/home/user:/bin/sh
EOF
cat >"$RD/etc/group" <<'EOF'
root:x:0:
users:x:100:
nogroup:x:65534:
EOF
printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files\n' >"$RD/etc/nsswitch.conf"
cat >"$RD/etc/ssh/sshd_config" <<'EOF'
HostKey /var/identity/ssh_host_ed25519_key
PidFile /run/sshd.pid
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
AuthorizedKeysFile none
Match User admin
  AuthorizedKeysFile /var/identity/admin_authorized_keys
Match User user
  AuthorizedKeysFile /var/identity/user_authorized_keys
EOF

cat >"$RD/init" <<'EOF'
#!/bin/sh
# Stand-in for the NixOS system in ivm's end-to-end tests: report what the
# guest sees as IVM-... lines on the serial console, then power off.
export PATH=/bin

/bin/mount -t proc proc /proc
/bin/mount -t sysfs sysfs /sys
/bin/mount -t devtmpfs devtmpfs /dev
echo 1 >/proc/sys/kernel/printk
if [ -c /dev/ttyS0 ]; then exec </dev/null >/dev/ttyS0 2>&1; fi

VARIANT=$(cat /etc/standin-variant)

off() {
  sync
  umount /var 2>/dev/null
  poweroff -f
  sleep 5
  echo o >/proc/sysrq-trigger
  while :; do sleep 60; done
}

fail() {
  echo "IVM-STANDIN error $*"
  dmesg | tail -n 15 | sed 's/^/IVM-DMESG /'
  echo "IVM-STANDIN end"
  off
}

# Never hang: power off whatever happens.
( sleep 300; echo "IVM-STANDIN error watchdog timeout"; poweroff -f ) &

echo "IVM-STANDIN begin variant=$VARIANT kernel=$(uname -r)"

for m in $(cat /etc/modules); do
  insmod "/lib/modules/$m" 2>/dev/null || echo "IVM-MODULE skipped=$m"
done

# Block devices appear asynchronously.
i=0
while [ ! -e /sys/block/vda ] || [ ! -e /sys/block/vdb ]; do
  i=$((i + 1)); [ $i -gt 100 ] && break
  sleep 0.1
done

# The root disk: report its read-only flag, then try to write one sector of
# the GPT gap back unchanged (allocates a cluster in the overlay if writable).
if [ -e /sys/block/vda ]; then
  ro=$(cat /sys/block/vda/ro)
  wf=1
  if dd if=/dev/vda of=/tmp/sector bs=512 skip=40 count=1 2>/dev/null &&
     dd if=/tmp/sector of=/dev/vda bs=512 seek=40 count=1 conv=notrunc,fsync 2>/dev/null; then
    wf=0
  fi
  echo "IVM-VDA ro=$ro writefailed=$wf"
else
  echo "IVM-STANDIN error no /dev/vda"
fi

# The /var disk: ext4 by label, on a whole disk.
dev=""
i=0
while [ -z "$dev" ]; do
  dev=$(findfs LABEL=ivm-var 2>/dev/null)
  [ -n "$dev" ] && break
  i=$((i + 1)); [ $i -gt 30 ] && break
  sleep 0.2
done
[ -n "$dev" ] || fail "no filesystem labelled ivm-var"
disk=$(basename "$dev")
if [ -e "/sys/block/$disk" ]; then whole=1; else whole=0; fi
echo "IVM-VAR dev=$dev wholedisk=$whole"
mount -t ext4 -o rw "$dev" /var || fail "mount $dev on /var"

# Grow /var to its disk, mounted (online), as systemd-growfs@var does on NixOS
# (autoResize): a no-op when the disk has not grown. Then report the
# filesystem's size as statfs gives it (total blocks of the fundamental size).
if ! /sbin/resize2fs "$dev" >/tmp/resize2fs.log 2>&1; then
  echo "IVM-STANDIN error resize2fs $dev: $(tail -n 1 /tmp/resize2fs.log)"
fi
set -- $(stat -f -c '%b %S' /var 2>/dev/null)
case "$1:$2" in
  *[!0-9:]*|:*|*:) echo "IVM-STANDIN error stat -f /var: $*" ;;
  *) echo "IVM-VARFS size=$(( $1 * $2 )) blocks=$1 bsize=$2" ;;
esac

for d in /var/*; do
  [ -d "$d" ] || continue
  n=${d#/var/}
  [ "$n" = lost+found ] && continue
  echo "IVM-DIR $n mode=$(stat -c %a "$d") uid=$(stat -c %u "$d") gid=$(stat -c %g "$d")"
done

if [ -d /var/identity ]; then
  for f in /var/identity/* /var/identity/.[!.]*; do
    [ -f "$f" ] || continue
    n=${f#/var/identity/}
    echo "IVM-FILE $n mode=$(stat -c %a "$f") uid=$(stat -c %u "$f") gid=$(stat -c %g "$f") size=$(stat -c %s "$f") b64=$(base64 -w 0 "$f")"
  done
else
  echo "IVM-STANDIN error no /var/identity"
fi

count=$(cat /var/standin-boot-count 2>/dev/null)
case "$count" in ''|*[!0-9]*) count=0 ;; esac
count=$((count + 1))
if echo "$count" >/var/standin-boot-count &&
   echo "$VARIANT" >/var/standin-last-variant && sync; then
  echo "IVM-VDB write=ok boots=$count"
else
  echo "IVM-VDB write=fail"
fi

case "$(cat /var/identity/hostname 2>/dev/null)" in
  *-agent)
    if [ -e /sys/class/net/eth0 ]; then
      ip link set eth0 up
      ip addr add 192.0.2.77/24 dev eth0
      timeout 60 sh /etc/agent.sh || echo "IVM-AGENT error not asked for the interfaces within 60 s"
      ip addr del 192.0.2.77/24 dev eth0
    fi ;;
esac

addr=none
if [ -e /sys/class/net/eth0 ]; then
  ip link set lo up
  ip link set eth0 up
  udhcpc -i eth0 -n -q -f -t 5 -T 2 -s /etc/udhcpc.script >/dev/null 2>&1
  [ -s /tmp/dhcp-ip ] && addr=$(cat /tmp/dhcp-ip)
fi
echo "IVM-DHCP ip=$addr"

# A guest named *-agent also serves SSH on its leased address until an admin
# login touches /tmp/ivm-ssh-done (or 120 s pass).
case "$(cat /var/identity/hostname 2>/dev/null)" in
  *-agent)
    if [ "$addr" != none ]; then
      # sshd's StrictModes refuses key files below a group- or world-writable folder, and the
      # initramfs root is one (rootfs is made 1777 or 0775).
      chmod 0755 /
      chmod 1777 /tmp
      /usr/sbin/sshd -D -e -f /etc/ssh/sshd_config 2>&1 | sed 's/^/sshd: /' &
      # -s, not -e: the login's shell makes the file before the command writing into it runs.
      i=0
      while [ ! -s /tmp/ivm-ssh-done ] && [ $i -lt 600 ]; do i=$((i + 1)); sleep 0.2; done
      if [ -s /tmp/ivm-ssh-done ]; then
        echo "IVM-SSH done by=$(cat /tmp/ivm-ssh-done)"
        # Time for sshd to send the session's exit status before the guest powers off.
        sleep 2
      else
        echo "IVM-SSH error no login within 120 s"
      fi
    fi ;;
esac

# A guest named *-hold stays up until the ACPI power button is pressed (virsh
# shutdown; virsh reboot, after which libvirt starts it again) or 240 s pass,
# so that a test can act on a running guest (ivm reboot, ivm stop).
case "$(cat /var/identity/hostname 2>/dev/null)" in
  *-hold)
    ev=""
    for n in /sys/class/input/event*; do
      [ "$(cat "$n/device/name" 2>/dev/null)" = "Power Button" ] && { ev=/dev/input/${n##*/}; break; }
    done
    if [ -n "$ev" ] && [ -c "$ev" ]; then
      rm -f /tmp/power-button
      # One input event (24 bytes) is a press: the device is open before saying we wait, so
      # none is missed (on a starved vCPU, starting timeout and dd can take a while).
      timeout 240 dd if="$ev" of=/tmp/power-button bs=24 count=1 2>/dev/null &
      reader=$!
      i=0
      while [ $i -lt 100 ]; do
        open=no
        for fd in /proc/[0-9]*/fd/*; do [ "$(readlink "$fd" 2>/dev/null)" = "$ev" ] && { open=yes; break; }; done
        [ $open = yes ] && break
        i=$((i + 1)); sleep 0.1
      done
      echo "IVM-HOLD waiting boots=$count"
      wait $reader
      if [ -s /tmp/power-button ]; then echo "IVM-HOLD power-button"; else echo "IVM-HOLD timeout"; fi
    else
      echo "IVM-STANDIN error no ACPI power button input device"
    fi ;;
esac

sync
umount /var || echo "IVM-STANDIN error umount /var"
echo "IVM-STANDIN end"
off
EOF
chmod 0755 "$RD/init"

# Reproducible archive: sorted names, fixed mtimes, root ownership.
find "$RD" -exec touch -h -d "@$EPOCH" {} +
(cd "$RD" && find . -mindepth 1 | LC_ALL=C sort |
  cpio --quiet -o -H newc -R 0:0 --reproducible | gzip -n -6) >"$WORK/initrd.gz"

# ---------------------------------------------------------------------- ESP
cat >"$WORK/loader.conf" <<'EOF'
timeout 0
default standin.conf
editor no
EOF
cat >"$WORK/standin.conf" <<EOF
title ivm stand-in ($VARIANT)
linux /standin/vmlinuz
initrd /standin/initrd
options console=ttyS0 panic=-1 quiet loglevel=1 ivm.standin=$VARIANT
EOF
cp "$KERNEL" "$WORK/vmlinuz"
cp "$SDBOOT" "$WORK/BOOTX64.EFI"
touch -d "@$EPOCH" "$WORK"/{loader.conf,standin.conf,vmlinuz,BOOTX64.EFI,initrd.gz}

need=$(( ( $(stat -c %s "$WORK/vmlinuz") + $(stat -c %s "$WORK/initrd.gz") + $(stat -c %s "$WORK/BOOTX64.EFI") ) / 1048576 + 8 ))
ESP_MIB=$(( need < 32 ? 32 : need ))
ESP=$WORK/esp.img
truncate -s "${ESP_MIB}M" "$ESP"
mkfs.vfat -F 16 -n ESP --invariant "$ESP" >/dev/null

export MTOOLS_SKIP_CHECK=1
mm() { "$@" >/dev/null || die "$1 failed"; }
mm mmd -i "$ESP" ::/EFI ::/EFI/BOOT ::/loader ::/loader/entries ::/standin
mm mcopy -m -i "$ESP" "$WORK/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
mm mcopy -m -i "$ESP" "$WORK/loader.conf" ::/loader/loader.conf
mm mcopy -m -i "$ESP" "$WORK/standin.conf" ::/loader/entries/standin.conf
mm mcopy -m -i "$ESP" "$WORK/vmlinuz" ::/standin/vmlinuz
mm mcopy -m -i "$ESP" "$WORK/initrd.gz" ::/standin/initrd

# --------------------------------------------------------------------- disk
DISK=$WORK/disk.raw
truncate -s "$(( ESP_MIB + 2 ))M" "$DISK"
# (sgdisk -q silently drops the edits here: capture its chatter instead)
sgout=$(sgdisk -U 5f3c9b4e-6a2d-4c1e-9b7a-1d2e3f405060 \
  -n 1:2048:0 -t 1:EF00 -c 1:ESP -u 1:0c2b4a6d-8e1f-4a3b-9c5d-7e6f80910203 "$DISK" 2>&1) ||
  die "sgdisk failed: $sgout"
sgdisk -i 1 "$DISK" 2>/dev/null | grep -q 'EFI system partition' || die "sgdisk wrote no ESP partition"
dd if="$ESP" of="$DISK" bs=1M seek=1 conv=notrunc,sparse status=none

TMP_OUT=$OUT_DIR/.standin.qcow2.$$
qemu-img convert -f raw -O qcow2 "$DISK" "$TMP_OUT" || die "qemu-img convert failed"
mv -f "$TMP_OUT" "$OUT_DIR/standin.qcow2"
echo "$OUT_DIR/standin.qcow2"
