"""Math core: torch and the standard library only; no I/O, no global RNG."""
