"""Transports to device agents. `open_transport` picks one from a device profile."""

from nasctl.device.profiles import DeviceProfile
from nasctl.device.transports.base import AgentDied, AgentSession, LinkLost, Session, Transport
from nasctl.device.transports.local import LocalTransport
from nasctl.errors import UserError


def open_transport(device: DeviceProfile, address: str | None = None, trust_new_host_key: bool = False) -> Transport:
    """Connect to the device. `address` overrides the profile's: an SSH [user@]host[:port]
    (`--host`) or an adb serial (`--serial`)."""
    root = device.energy.get("sysfs_root", "/")
    if device.transport == "local":
        if address is not None:
            raise UserError(f"device {device.name!r} is this machine: --host/--serial do not apply")
        return LocalTransport(root)
    if device.transport == "command":
        from nasctl.device.transports.command import CommandTransport

        return CommandTransport(device.command_target(address))
    if device.transport == "ssh":
        from nasctl.device.transports.ssh import SshTarget, SshTransport

        return SshTransport(SshTarget.from_profile(device.connection, address, root), trust_new_host_key)
    from nasctl.device.transports.adb import AdbTarget, AdbTransport

    return AdbTransport(AdbTarget.from_profile(device.connection, address, root))


__all__ = ["AgentDied", "AgentSession", "LinkLost", "LocalTransport", "Session", "Transport", "open_transport"]
