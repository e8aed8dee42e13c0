"""Export of trained spiking networks to other toolchains (NIR)."""
