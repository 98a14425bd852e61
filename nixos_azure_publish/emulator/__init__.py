"""A local Azure: an HTTPS Resource Manager for compute, with Azurite for blobs."""
