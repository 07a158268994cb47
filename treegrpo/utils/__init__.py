"""Utilities under the adapters: `devices` (device names to torch devices, launcher ranks; on the core's floor) and
`errors` (`UserError`, on the ground floor: config raises it too)."""
