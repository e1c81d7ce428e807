"""Reaching a device: its profile (what it is and how to time on it) and the transports that run
the agent there. Profiling and TensorRT export both use it; it uses neither."""

from nasctl.device.profiles import DeviceProfile, list_profiles, load_device

__all__ = ["DeviceProfile", "list_profiles", "load_device"]
