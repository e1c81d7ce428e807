"""Measuring archs on devices: the runner and the row store (devices and transports: nasctl.device)."""

from nasctl.profile.runner import Summary, check_device, profile_archs, survey_devices
from nasctl.profile.store import Store

__all__ = ["Store", "Summary", "check_device", "profile_archs", "survey_devices"]
