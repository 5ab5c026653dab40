# Machine "default": every ivm module. Its name, hostname, keys and ports are not here: `ivm
# identity` generates them into this folder and `ivm create` copies them onto the VM's /var disk.
{ ivmModules, ... }:
{
  imports = [ ivmModules.default ];
}
