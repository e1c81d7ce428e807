"""Device profiles that ship with nasctl (TOML files); this file only makes the folder installable."""
