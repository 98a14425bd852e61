"""Hooks and the publishing worker: Hydra and Nix post-build hooks enqueue, a worker publishes.

Both hooks run synchronously in their caller (hydra-notify, the Nix build loop)
and are delivered at least once, so they only filter and enqueue a job file
into a spool directory and return; :mod:`.worker` takes the jobs one at a time
and publishes each in a subprocess. This package's hook path imports nothing
heavier than the standard library: a hook must return in well under a second.
"""
