"""Transports to device agents. `open_transport` picks one from a device profile."""

from nasctl.errors import UserError
from nasctl.profile.devices import DeviceProfile
from nasctl.profile.transports.base import AgentDied, AgentSession, Transport
from nasctl.profile.transports.local import LocalTransport


def open_transport(device: DeviceProfile) -> Transport:
    if device.transport == "local":
        return LocalTransport(device.energy.get("sysfs_root", "/"))
    raise UserError(
        f"device {device.name!r} uses the {device.transport} transport, which this nasctl "
        "version does not have yet (only 'local')"
    )


__all__ = ["AgentDied", "AgentSession", "LocalTransport", "Transport", "open_transport"]
