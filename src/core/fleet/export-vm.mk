# The standalone provisioner of the ivm machine @@NAME@@, written by `ivm export`.
# It needs GNU make, a POSIX sh, virsh, qemu-img, ssh and coreutils (and sudo unless you are root),
# never ivm or node; README.md beside it says what each target does. Run it in its own folder:
#   make -C <this folder> up
# Nothing is kept besides the disks it makes in VM_DIR: every target asks libvirt and the files.

ifneq ($(filter-out Makefile,$(lastword $(MAKEFILE_LIST))),)
$(error run this Makefile in its own folder (it reads ./domain.xml, ./var.qcow2 and ./known_hosts): make -C <folder> <target>)
endif

SHELL := /bin/sh
.SHELLFLAGS := -ec
.ONESHELL:
.NOTPARALLEL:
.SUFFIXES:
.DEFAULT_GOAL := help

# --- Fixed at export time: domain.xml names these paths, so they cannot be changed here. To put the
# VM elsewhere, export it again (IVM_VM_DIR=... ivm export @@NAME@@ <folder> --force).
override NAME := @@NAME@@
override UUID := @@UUID@@
override MAC := @@MAC@@
override MAC_UPPER := @@MAC_UPPER@@
# The libvirt network whose DHCP leases `make ip` reads (empty: a host bridge or user-mode networking).
override NETWORK := @@NETWORK@@
# The DHCP reservation `make create` adds on NETWORK for the VM's MAC (meta.nix ipAddress; empty: none).
override IP_ADDRESS := @@IP_ADDRESS@@
# User-mode networking (session mode without a bridge): no ARP table to ask.
override USER_NET := @@USER_NET@@
# The libvirt mode domain.xml was rendered for (system, or session: no root, user-mode networking).
override EXPORT_MODE := @@MODE@@
override VM_DIR := @@VM_DIR@@
override BASE := @@BASE@@
override BOOT := $(VM_DIR)/$(NAME)-boot.qcow2
override BOOT_PREV := $(VM_DIR)/$(NAME)-boot-prev.qcow2
override VAR_DISK := $(VM_DIR)/$(NAME)-var.qcow2
override NVRAM := $(VM_DIR)/$(NAME)_VARS.fd
override SERIAL_LOG := $(VM_DIR)/$(NAME)-serial.log

# --- Your settings, read as ivm reads them (from the environment or the command line).
# LIBVIRT_URI: the libvirt connection (default: the one of the export).
ifeq ($(strip $(LIBVIRT_URI)),)
override LIBVIRT_URI := @@LIBVIRT_URI@@
endif
# Session mode (qemu:///session, qemu+unix:///session, ...) needs root for nothing: SUDO is ignored.
ifneq ($(filter qemu%/session,$(firstword $(subst ?, ,$(LIBVIRT_URI)))),)
override MODE := session
override SUDO :=
else
override MODE := system
# SUDO: the prefix of the commands that need root; default sudo unless you are root; SUDO= disables it.
ifeq ($(origin SUDO),undefined)
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
endif
endif
# HOST_CMD: the prefix of every default tool command (e.g. host-spawn in distrobox).
# VIRSH, QEMU_IMG, SSH: a tool's whole command, used as given (split at blanks); empty or unset: the default.
ifeq ($(strip $(VIRSH)),)
override VIRSH := $(strip $(HOST_CMD) $(SUDO) virsh)
endif
ifeq ($(strip $(QEMU_IMG)),)
override QEMU_IMG := $(strip $(HOST_CMD) $(SUDO) qemu-img)
endif
ifeq ($(strip $(SSH)),)
override SSH := $(strip $(HOST_CMD) ssh)
endif
# The prefix of the file commands in VM_DIR and on the base (test, mkdir, cp, chmod, ln, rm), as ivm runs them.
override ROOT := $(strip $(HOST_CMD) $(SUDO))

# Options of the targets (make TARGET VAR=value).
TIMEOUT ?= 120
WAIT ?= 0
# PURGE=1 (delete the /var disk) and FORCE=1 (power off) count only on the command line: a variable
# left in the environment never deletes data or pulls the plug.
ifneq ($(origin PURGE),command line)
override PURGE :=
endif
ifneq ($(origin FORCE),command line)
override FORCE :=
endif

# A value as one single-quoted shell word, whatever it holds.
q = '$(subst ','\'',$(1))'
V = $(VIRSH) -c $(call q,$(value LIBVIRT_URI))

# The start of every recipe: run echoes a command that changes something (on stderr) and runs it;
# fail says why a target stops (and what to do), and stops it.
define PRELUDE
uri=$(call q,$(value LIBVIRT_URI))
run() { printf '+ %s\n' "$$*" >&2; "$$@"; }
fail() { printf '%s: %s\n' $(NAME) "$$1" >&2; [ -z "$${2-}" ] || printf 'hint: %s\n' "$$2" >&2; exit 1; }
is_set() { [ "$$1" = 1 ]; }
endef

# state: the domain's state (running, shut off, ...), or undefined; a domain of this name that is not
# this machine (another uuid) is never touched.
define STATE
state=$$(LC_ALL=C $(V) domstate $(NAME) 2>&1) || case $$state in
  *'failed to get domain'*|*'Domain not found'*) state=undefined ;;
  *) printf '%s\n' "$$state" >&2; fail 'virsh failed (above)' 'check LIBVIRT_URI, VIRSH and that libvirtd runs' ;;
esac
if [ "$$state" != undefined ]; then
  uuid=$$(LC_ALL=C $(V) domuuid $(NAME))
  [ "$$uuid" = $(UUID) ] || fail "the libvirt domain $(NAME) has the uuid $$uuid, not this machine's $(UUID): nothing was changed" 'a VM of that name was made by other means: rename one of them'
fi
endef

define NEED_BASE
base=$(call q,$(BASE))
if $(ROOT) test -L "$$base" || ! $(ROOT) test -f "$$base"; then
  fail "the base image $$base is missing (or not a regular file)" "build and install it there (ivm build $(NAME) on a host with the project), or copy that file to this path (mode 0444)"
fi
endef

# addr: the VM's IPv4 address (ADDRESS=... gives it), asked of the guest agent, then the DHCP leases
# of NETWORK, then the ARP table, every second for up to WAIT seconds; matched by the VM's MAC.
define ADDRESS_LOOKUP
from_domifaddr() {
  n=0; cur=
  while read -r _name _mac _proto _addr _rest; do
    n=$$((n + 1)); [ $$n -gt 2 ] || continue
    [ -n "$$_addr" ] || continue
    [ "$$_mac" = - ] || cur=$$_mac
    case $$cur in $(MAC)|$(MAC_UPPER)) ;; *) continue ;; esac
    [ "$$_proto" = ipv4 ] || continue
    case $$_addr in 127.*) ;; *) echo "$${_addr%%/*}"; return 0 ;; esac
  done
}
from_leases() {
  n=0; best=; found=
  while read -r _day _time _mac _proto _addr _rest; do
    n=$$((n + 1)); [ $$n -gt 2 ] || continue
    [ "$$_proto" = ipv4 ] || continue
    case $$_mac in $(MAC)|$(MAC_UPPER)) ;; *) continue ;; esac
    if [ -z "$$best" ] || expr "$$_day $$_time" \> "$$best" >/dev/null; then best="$$_day $$_time"; found=$${_addr%%/*}; fi
  done
  [ -z "$$found" ] || echo "$$found"
}
wait=$(call q,$(value WAIT))
case $$wait in ''|*[!0-9]*) fail "WAIT=$$wait is not a whole number of seconds" ;; esac
addr=$(call q,$(value ADDRESS))
waited=0
while [ -z "$$addr" ]; do
  $(STATE)
  case $$state in undefined) fail "it is not defined in libvirt ($$uri)" 'make up' ;; esac
  if [ "$$state" = running ]; then addr=$$(LC_ALL=C $(V) domifaddr $(NAME) --source agent 2>/dev/null | from_domifaddr) || addr=; fi
  if [ -z "$$addr" ] && [ -n '$(NETWORK)' ]; then addr=$$(LC_ALL=C $(V) net-dhcp-leases $(NETWORK) --mac $(MAC) 2>/dev/null | from_leases) || addr=; fi
  if [ -z "$$addr" ] && [ "$$state" = running ] && [ -z '$(USER_NET)' ]; then addr=$$(LC_ALL=C $(V) domifaddr $(NAME) --source arp 2>/dev/null | from_domifaddr) || addr=; fi
  [ -z "$$addr" ] || break
  if [ $$waited -ge $$wait ]; then
    [ "$$state" = running ] || fail "it is $$state and has no DHCP lease" 'make start, then: make ip WAIT=60'
    fail "no address for $(MAC) from the guest agent, the DHCP leases or the ARP table (waited $$waited s)" 'it may still be booting: make ip WAIT=60'
  fi
  sleep 1; waited=$$((waited + 1))
done
endef

.PHONY: help up down create start stop console ip ssh status destroy

help:
	@$(PRELUDE)
	printf '%s\n' \
	  'The standalone provisioner of $(NAME) (README.md says more). make -C <this folder> TARGET:' \
	  '  up        create, then start' \
	  '  down      stop, then destroy: the /var disk is kept (PURGE=1 deletes it)' \
	  '  create    the /var disk (a copy of ./var.qcow2, unless one is kept), the boot overlay on the base, virsh define' \
	  '  start     start the VM' \
	  '  stop      graceful shutdown, waiting up to TIMEOUT=120 seconds (FORCE=1: power off at once)' \
	  '  console   the serial console (leave with Ctrl+])' \
	  '  ip        its IPv4 address (WAIT=S: poll that long)' \
	  '  ssh       ssh as user (ADMIN=1: admin), the host key pinned by ./known_hosts; CMD=... runs a command' \
	  '  status    the state of its domain and which of its files are there' \
	  '  destroy   undefine (with NVRAM), remove the boot overlay and serial log; /var kept unless PURGE=1' \
	  'Settings in force:'
	printf '  %s=%s\n' LIBVIRT_URI "$$uri" SUDO $(call q,$(SUDO)) HOST_CMD $(call q,$(HOST_CMD)) VIRSH $(call q,$(VIRSH)) QEMU_IMG $(call q,$(QEMU_IMG)) SSH $(call q,$(SSH)) \
	  VM_DIR $(call q,$(VM_DIR)) BASE $(call q,$(BASE))

up: create start

down: stop destroy

create:
	@$(PRELUDE)
	if [ $(MODE) != $(EXPORT_MODE) ]; then
	  fail "LIBVIRT_URI=$$uri is libvirt's $(MODE) mode, but domain.xml was exported for $(EXPORT_MODE) mode" 'export it again with that LIBVIRT_URI, or run with the one of the export'
	fi
	$(STATE)
	if [ "$$state" != undefined ]; then echo "$(NAME) is already defined ($$state): nothing to create"; exit 0; fi
	$(NEED_BASE)
	[ -f ./var.qcow2 ] && [ ! -L ./var.qcow2 ] || fail 'its /var image ./var.qcow2 is missing (or not a regular file)' 'export it again'
	[ -f ./domain.xml ] && [ ! -L ./domain.xml ] || fail 'its ./domain.xml is missing (or not a regular file)' 'export it again'
	vmdir=$(call q,$(VM_DIR)); boot=$(call q,$(BOOT)); var=$(call q,$(VAR_DISK))
	# Nothing is ever written through a link, and no existing file is replaced.
	for f in "$$boot.new" "$$var.new"; do
	  if $(ROOT) test -e "$$f" -o -L "$$f"; then fail "$$f is in the way (left by a run cut short?)" 'remove it, then run make create again'; fi
	done
	if $(ROOT) test -e "$$boot" -o -L "$$boot"; then fail "its boot overlay $$boot exists without a domain" 'remove it first: make destroy (keeps the /var disk)'; fi
	if $(ROOT) test -L "$$var" || { $(ROOT) test -e "$$var" && ! $(ROOT) test -f "$$var"; }; then fail "$$var is not a regular file: it is not used" 'remove it'; fi
	made_boot=; made_var=; made_reservation=
	undo() {
	  [ $$? -ne 0 ] || return 0
	  printf '%s: create failed: undoing what it made\n' $(NAME) >&2
	  $(ROOT) rm -f -- "$$boot.new" "$$var.new"
	  [ -z "$$made_boot" ] || $(ROOT) rm -f -- "$$boot"
	  [ -z "$$made_var" ] || $(ROOT) rm -f -- "$$var"
	  [ -z "$$made_reservation" ] || $(V) net-update $(NETWORK) delete ip-dhcp-host "$$host" $$where || true
	}
	trap undo EXIT
	if [ -n '$(IP_ADDRESS)' ]; then
	  host="<host mac='$(MAC)' name='$(NAME)' ip='$(IP_ADDRESS)'/>"
	  netxml=$$(LC_ALL=C $(V) net-dumpxml $(NETWORK))
	  case $$netxml in
	    *"mac='$(MAC)'"*) echo "$(NETWORK) holds a DHCP host entry for $(MAC) already: kept" ;;
	    *)
	      # An active network takes the reservation now (--live) and keeps it (--config).
	      where=--config
	      for active in $$(LC_ALL=C $(V) net-list --name); do [ "$$active" != $(NETWORK) ] || where='--live --config'; done
	      run $(V) net-update $(NETWORK) add-last ip-dhcp-host "$$host" $$where
	      made_reservation=1 ;;
	  esac
	fi
	run $(ROOT) mkdir -p "$$vmdir"
	if $(ROOT) test -f "$$var"; then
	  echo "$(NAME): reusing its kept /var disk $$var"
	else
	  # The /var disk holds the host's private key: 0600 from the start (umask 077), copied under a
	  # temporary name and linked to its own without replacing anything (ln -T, no -f).
	  (umask 077 && run $(ROOT) cp ./var.qcow2 "$$var.new")
	  run $(ROOT) chmod 0600 "$$var.new"
	  run $(ROOT) ln -T "$$var.new" "$$var"
	  made_var=1
	  run $(ROOT) rm -f -- "$$var.new"
	fi
	run $(QEMU_IMG) create -q -f qcow2 -b "$$base" -F qcow2 "$$boot.new"
	run $(ROOT) ln -T "$$boot.new" "$$boot"
	made_boot=1
	run $(ROOT) rm -f -- "$$boot.new"
	run $(V) define ./domain.xml
	echo "created $(NAME): boot $$boot (backed by $$base), /var $$var; domain defined"

start:
	@$(PRELUDE)
	$(STATE)
	case $$state in
	  undefined) fail "it is not defined in libvirt ($$uri)" 'make create (or make up)' ;;
	  running) echo "$(NAME) is already running"; exit 0 ;;
	esac
	$(NEED_BASE)
	run $(V) start $(NAME)
	echo "started $(NAME); serial log: "$(call q,$(SERIAL_LOG))

stop:
	@$(PRELUDE)
	$(STATE)
	case $$state in undefined|'shut off') echo "$(NAME) is not running ($$state)"; exit 0 ;; esac
	if is_set $(call q,$(value FORCE)); then run $(V) destroy $(NAME); echo "$(NAME) powered off"; exit 0; fi
	timeout=$(call q,$(value TIMEOUT))
	case $$timeout in ''|*[!0-9]*) fail "TIMEOUT=$$timeout is not a whole number of seconds" ;; esac
	run $(V) shutdown $(NAME)
	waited=0
	while :; do
	  # Gone (undefined meanwhile) counts as off; any other virsh failure is not taken for one.
	  now=$$(LC_ALL=C $(V) domstate $(NAME) 2>&1) || case $$now in
	    *'failed to get domain'*|*'Domain not found'*) now='shut off' ;;
	    *) printf '%s\n' "$$now" >&2; fail 'virsh failed while waiting for the shutdown (above); the VM may still be running' 'make status' ;;
	  esac
	  [ "$$now" != 'shut off' ] || break
	  [ $$waited -lt $$timeout ] || fail "it did not shut down within $$timeout s (it was asked to, and may still power off later)" 'wait longer (make stop TIMEOUT=300), or power it off: make stop FORCE=1'
	  sleep 1; waited=$$((waited + 1))
	done
	echo "$(NAME) shut off"

console:
	@$(PRELUDE)
	$(STATE)
	[ "$$state" != undefined ] || fail "it is not defined in libvirt ($$uri)" 'make up'
	exec $(V) console $(NAME)

ip:
	@$(PRELUDE)
	$(ADDRESS_LOOKUP)
	echo "$$addr"

ssh:
	@$(PRELUDE)
	[ -f ./known_hosts ] && [ ! -L ./known_hosts ] || fail 'its ./known_hosts (the pinned host key) is missing (or not a regular file)' 'export it again'
	$(ADDRESS_LOOKUP)
	login=user; ! is_set $(call q,$(value ADMIN)) || login=admin
	port=$(call q,$(value PORT))
	case $$port in *[!0-9]*) fail "PORT=$$port is not a TCP port" ;; esac
	cmd=$(call q,$(value CMD))
	# Never StrictHostKeyChecking=no or accept-new: a host key other than the pinned one is an error.
	exec $(SSH) -o HostKeyAlias=$(NAME) -o UserKnownHostsFile=./known_hosts -o GlobalKnownHostsFile=/dev/null \
	  -o StrictHostKeyChecking=yes -o UpdateHostKeys=no -o CheckHostIP=no $${port:+-p "$$port"} -l "$$login" -- "$$addr" $${cmd:+"$$cmd"}

status:
	@$(PRELUDE)
	$(STATE)
	there() {
	  if $(ROOT) test -L "$$1"; then echo 'a symbolic link (not used)'
	  elif $(ROOT) test -f "$$1"; then echo present
	  elif $(ROOT) test -e "$$1"; then echo 'not a regular file (not used)'
	  else echo missing; fi
	}
	printf '%s\n' "$(NAME): $$state (libvirt $$uri)"
	for f in $(call q,$(BASE)) $(call q,$(BOOT)) $(call q,$(VAR_DISK)); do printf '  %s: %s\n' "$$f" "$$(there "$$f")"; done

destroy:
	@$(PRELUDE)
	$(STATE)
	case $$state in
	  undefined|'shut off') ;;
	  *) is_set $(call q,$(value FORCE)) || fail "it is $$state" 'stop it first (make stop), or add FORCE=1 to power it off'
	     run $(V) destroy $(NAME) ;;
	esac
	set -- $(call q,$(BOOT)) $(call q,$(BOOT_PREV)) $(call q,$(NVRAM)) $(call q,$(SERIAL_LOG))
	purge=; ! is_set $(call q,$(value PURGE)) || { purge=1; set -- "$$@" $(call q,$(VAR_DISK)); }
	# Checked before anything goes: a link or an odd file in place of one of them is refused, not removed.
	for f do
	  if $(ROOT) test -L "$$f" || { $(ROOT) test -e "$$f" && ! $(ROOT) test -f "$$f"; }; then fail "$$f is not a regular file: nothing was removed" 'remove it yourself'; fi
	done
	[ "$$state" = undefined ] || run $(V) undefine --nvram $(NAME)
	for f do if $(ROOT) test -f "$$f"; then run $(ROOT) rm -f -- "$$f"; fi; done
	var=$(call q,$(VAR_DISK))
	if [ -n "$$purge" ]; then echo "destroyed $(NAME) and deleted its /var disk"
	elif $(ROOT) test -f "$$var"; then echo "destroyed $(NAME); kept its /var disk $$var (make destroy PURGE=1 deletes it; make up uses it again)"
	else echo "destroyed $(NAME)"; fi
