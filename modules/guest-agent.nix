# guest-agent.nix: the QEMU guest agent, so that libvirt can shut the VM down cleanly, freeze its
# filesystems and read its addresses (`virsh domifaddr --source agent`). The domain needs the
# org.qemu.guest_agent.0 virtio-serial channel (the CLI's domain XML). The agent keeps its state
# in /run; it writes nothing to the root.
#
# Checked in sources: nixos/modules/virtualisation/qemu-guest-agent.nix (services.qemuGuest.enable).
{ lib, ... }:
{
  config = {
    services.qemuGuest.enable = lib.mkDefault true;
  };
}
