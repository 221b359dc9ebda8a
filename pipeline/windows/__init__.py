"""What the bakery knows about Windows disks offline: the registry, the NTFS volume, the drivers."""
