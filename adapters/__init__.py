"""Engine adapters: the Engine protocol and its implementations. Never imports gateway/."""
