"""The built-in demo jungle: a real miniature Model Jungle, built offline (see assets/README.md)."""
