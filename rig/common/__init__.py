"""What every layer of the rig and the kiosk share: input checking (strict models, errors,
TOML files) and the IEC 60601-1-8 alarm priorities with their signals."""
