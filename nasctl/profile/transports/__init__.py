"""Transports to device agents. `open_transport` picks one from a device profile."""

from nasctl.errors import UserError
from nasctl.profile.devices import DeviceProfile
from nasctl.profile.transports.base import AgentDied, AgentSession, LinkLost, Transport
from nasctl.profile.transports.local import LocalTransport


def open_transport(device: DeviceProfile, host: str | None = None, trust_new_host_key: bool = False) -> Transport:
    """Connect to the device; `host` ([user@]address[:port]) overrides the profile's."""
    root = device.energy.get("sysfs_root", "/")
    if host is not None and device.transport != "ssh":
        raise UserError(f"--host is for SSH devices; {device.name!r} uses the {device.transport} transport")
    if device.transport == "local":
        return LocalTransport(root)
    if device.transport == "ssh":
        from nasctl.profile.transports.ssh import SshTarget, SshTransport

        return SshTransport(SshTarget.from_profile(device.connection, host, root), trust_new_host_key)
    raise UserError(
        f"device {device.name!r} uses the {device.transport} transport, which this nasctl "
        "version does not have yet (only 'local' and 'ssh')"
    )


__all__ = ["AgentDied", "AgentSession", "LinkLost", "LocalTransport", "Transport", "open_transport"]
