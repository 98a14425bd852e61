"""Helpers that several test modules use: making images, writing targets, publishing."""
