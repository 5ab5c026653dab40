# ivm recipes: each is a thin call of the ivm CLI (bin/ivm.js), which does the work.
# Every variable below can be overridden from the environment, e.g. for distrobox:
#   HOST_CMD=host-spawn just create-vm web
# The tool variables hold a whole command (several words allowed, e.g. VIRSH="sudo virsh");
# ivm runs them as given. See README.md, "Environment".

set positional-arguments := true

export HOST_CMD := env("HOST_CMD", "")
export LIBVIRT_URI := env("LIBVIRT_URI", "qemu:///system")
# Session mode (qemu:///session): no root, so no SUDO, and ivm's own default folders (~/ivm/...).
session := if LIBVIRT_URI =~ '^qemu(\+[a-z]+)?://[^/]*/session' { "yes" } else { "" }
export SUDO := if session == "yes" { "" } else { env("SUDO", if `id -u` == "0" { "" } else { "sudo" }) }
export JUST := env("JUST", "just")
export NIX := env("NIX", trim(HOST_CMD + " nix"))
export VIRSH := env("VIRSH", trim(HOST_CMD + " " + SUDO + " virsh"))
export QEMU_IMG := env("QEMU_IMG", trim(HOST_CMD + " " + SUDO + " qemu-img"))
export GUESTFISH := env("GUESTFISH", trim(HOST_CMD + " " + SUDO + " guestfish"))
export CP := env("CP", trim(HOST_CMD + " " + SUDO + " cp"))
export READLINK := env("READLINK", trim(HOST_CMD + " readlink"))
export SSH := env("SSH", trim(HOST_CMD + " ssh"))
export APPARMOR_PARSER := env("APPARMOR_PARSER", trim(HOST_CMD + " " + SUDO + " apparmor_parser"))
export LIBGUESTFS_BACKEND := env("LIBGUESTFS_BACKEND", "direct")
# Empty: libvirt picks UEFI firmware without Secure Boot. Set both to name the files yourself.
export OVMF_CODE := env("OVMF_CODE", "")
export OVMF_VARS := env("OVMF_VARS", "")
# Empty in session mode: ivm picks ~/ivm/base-images and ~/ivm/images (README.md, "Session mode").
export IVM_BASE_DIR := env("IVM_BASE_DIR", if session == "yes" { "" } else { "/var/lib/libvirt/base-images" })
export IVM_VM_DIR := env("IVM_VM_DIR", if session == "yes" { "" } else { "/var/lib/libvirt/images" })

ivm := "node " + quote(justfile_directory() / "bin" / "ivm.js")

# List the recipes and the variables in force
default:
    @"$JUST" --justfile {{ quote(justfile()) }} --list
    @echo
    @echo "Variables (override them in the environment):"
    @"$JUST" --justfile {{ quote(justfile()) }} --evaluate | grep -v '^ivm '

# Build a machine's base image and install it once into IVM_BASE_DIR
build name="default" *flags:
    {{ ivm }} build "$@"

# Write libvirt/<name>.xml for the given machines (default: all)
build-libvirt-xml *names:
    {{ ivm }} xml --write "$@"

# Create a machine's missing identity files (never overwrites)
identity name *flags:
    {{ ivm }} identity "$@"

# Write a new machine: meta.nix, default.nix, identity, git add (flags: --profile a,b --memory --var-size --bridge --ip --from ...)
new-vm name *flags:
    {{ ivm }} new "$@"

# List the profile catalogue (flag: --json)
profiles *flags:
    {{ ivm }} profiles "$@"

# Create a VM: boot overlay, /var disk with identity, XML, define (flags: --no-build, --start)
create-vm name *flags:
    {{ ivm }} create "$@"

# (Re)define a VM's domain from freshly rendered XML
define-vm name *flags:
    {{ ivm }} define "$@"

# Start a VM
start-vm name *flags:
    {{ ivm }} start "$@"

# Shut a VM down (flags: --force, --timeout SECONDS)
stop-vm name *flags:
    {{ ivm }} stop "$@"

# Reboot a running VM: ask its OS (ACPI); --force resets it at once (flag: --force)
reboot-vm name *flags:
    {{ ivm }} reboot "$@"

# Attach to a VM's serial console
console name *flags:
    {{ ivm }} console "$@"

# Undefine a VM and remove its boot overlay; keeps /var unless --delete-var
destroy-vm name *flags:
    {{ ivm }} destroy "$@"

# Every machine with the state of its domain (flag: --json)
list *flags:
    {{ ivm }} list "$@"

# Move a VM to its newly built base, keeping /var (flags: --no-build, --restart, --timeout SECONDS)
upgrade-vm name *flags:
    {{ ivm }} upgrade "$@"

# Put a VM's boot overlay back onto its previous base (flags: --restart, --timeout SECONDS)
rollback-vm name *flags:
    {{ ivm }} rollback "$@"

# Snapshot a stopped VM's /var disk: just snapshot web [SNAP] (flags: --note TEXT, --stop)
snapshot name *args:
    {{ ivm }} snapshot create "$@"

# The snapshots of a VM's /var disk with time, data size and note (flag: --json)
snapshots name *flags:
    {{ ivm }} snapshot list "$@"

# Put a VM's /var disk back to a snapshot, keeping the state before as one (flag: --stop)
snapshot-restore name snap *flags:
    {{ ivm }} snapshot restore "$@"

# Delete one snapshot of a VM's /var disk
snapshot-delete name snap *flags:
    {{ ivm }} snapshot delete "$@"

# Back up a stopped VM's /var disk into one 0600 file (flags: --to DIR, --stop, --timeout SECONDS)
backup name *flags:
    {{ ivm }} backup create "$@"

# A VM's backups, each checked byte for byte (flags: --in DIR, --json)
backups name *flags:
    {{ ivm }} backup list "$@"

# Put a backup's /var onto its stopped VM, keeping the disk it replaces (flags: --as NEW, --no-build)
backup-restore name file *flags:
    {{ ivm }} backup restore "$@"

# A new machine NEW from SRC: its files, its own identity, a copy of /var (flags: --stop, --start, --timeout SECONDS)
clone-vm src new *flags:
    {{ ivm }} clone "$@"

# Grow a VM's /var disk to its meta.nix varSize; never shrinks (flags: --restart, --timeout SECONDS)
grow-vm name *flags:
    {{ ivm }} grow "$@"

# Every machine (or those named) against what exists, one line each; exit 0 nothing to do, 10 changes (flags: --json, --no-build, --deep, --restart, --remove-orphan NAME)
plan *args:
    {{ ivm }} plan "$@"

# Do what `plan` prints: create, upgrade, redefine, grow, start; a summary (flags: --no-build, --deep, --restart, --remove-orphan NAME)
apply *args:
    {{ ivm }} apply "$@"

# Start a VM afresh: new boot overlay AND new /var disk, all /var data lost (flags: --yes, --no-build, --start)
recreate-vm name *flags:
    {{ ivm }} recreate "$@"

# A VM's state, bases, disks and identity sync (flag: --json)
status name *flags:
    {{ ivm }} status "$@"

# Delete the base images nothing uses (flag: --dry-run lists them)
gc *flags:
    {{ ivm }} gc "$@"

# Check the host contract and print the plan of what is missing (flag: --apply does it)
host-setup *flags:
    {{ ivm }} host setup "$@"

# Check every host requirement; each failure names its fix (flag: --json)
doctor *flags:
    {{ ivm }} doctor "$@"

# libvirt networks: net create NAME --kind nat --cidr 192.168.100.0/24 | net list | net destroy NAME
net *args:
    {{ ivm }} net "$@"

# Define, start and autostart a libvirt network (flags: --kind nat|isolated|bridge, --cidr CIDR, --bridge BR)
net-create name *flags:
    {{ ivm }} net create "$@"

# Every libvirt network with its kind, CIDR, DHCP range and state (flag: --json)
net-list *flags:
    {{ ivm }} net list "$@"

# Stop and undefine a libvirt network (flag: --force, even with VMs attached)
net-destroy name *flags:
    {{ ivm }} net destroy "$@"

# Make the DHCP reservation of a machine's ipAddress (meta.nix) on its network
net-reserve machine *flags:
    {{ ivm }} net reserve "$@"

# A VM's IPv4 address (flag: --wait SECONDS)
ip name *flags:
    {{ ivm }} ip "$@"

# ssh to a VM as `user`, its host key pinned; words after the name are the command (just ssh web uname -a)
ssh name *command:
    n="$1"; shift; {{ ivm }} ssh "$n" -- "$@"

# The same as `admin` (sudo): just ssh-admin web sudo systemctl status
ssh-admin name *command:
    n="$1"; shift; {{ ivm }} ssh --admin "$n" -- "$@"

# Wait until a VM answers on SSH with its pinned host key (flag: --timeout SECONDS)
wait name *flags:
    {{ ivm }} wait "$@"

# Write a standalone provisioner (Makefile, domain XML, /var image, known_hosts): just export-vm web DIR, or just export-vm --all DIR (flags: --force, --build)
export-vm name *args:
    {{ ivm }} export "$@"

# Print the shell completion script: just completion bash|zsh|fish (README.md, "Shell completion")
completion shell *flags:
    {{ ivm }} completion "$@"
