"""A local Azure: an HTTPS Resource Manager for compute, with Azurite for blobs.

The emulator is an independent oracle for Azure: it imports nothing from the
rest of ``nixos_azure_publish`` (a test walks its imports to keep it so), and
keeps its own copies of what it needs, so that the tool's view of Azure can
never leak into the emulator's.
"""
