{
  system = "x86_64-linux";
  memory = 2048;
  vcpus = 2;
}
