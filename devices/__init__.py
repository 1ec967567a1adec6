"""The simulated fleet: devices with their registry profiles (the cost model joins here later)."""
