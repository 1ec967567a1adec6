"""Real hardware: the serial-bridge protocol, the host's bridge, the Pi agent, the emulators and the
C firmware. It imports only the standard library, numpy and pyserial (no other fedsim package), so
a Raspberry Pi installs it alone as the ``fedsim-edge`` distribution (``edge/pyproject.toml``)."""
