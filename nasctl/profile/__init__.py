"""Measuring archs on devices: profiles, transports, the agent protocol and the row store."""

from nasctl.profile.devices import DeviceProfile, list_profiles, load_device
from nasctl.profile.runner import Summary, check_device, profile_archs, survey_devices
from nasctl.profile.store import Store

__all__ = ["DeviceProfile", "Store", "Summary", "check_device", "list_profiles", "load_device", "profile_archs", "survey_devices"]
