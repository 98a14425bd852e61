"""Helpers that several test modules (and the benches) use, so that no test module imports
another: making images (``images``), writing targets (``targets``), publishing into the
emulator and reading back what it holds (``publishing``), importing (``importing``), the
smoke test (``smoke``), running Nix (``nix``) and checking traffic against Azure's API
specs (``specs``). Fixtures that several modules use live in the ``conftest.py`` files."""
