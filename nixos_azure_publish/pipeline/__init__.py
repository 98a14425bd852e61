"""One publish, from a located image to a replicated gallery image version.

The publish is a list of :class:`Step` objects. Each has ``plan()`` (say what
it would do, from what :class:`Discover` found, without changing anything)
and ``run()`` (do it, looking at Azure first and creating only what is
missing). ``--dry-run`` prints the plan; a real run executes the steps in
order and records each in the :class:`~nixos_azure_publish.report.PublishReport`.

Everything that can fail without uploading runs first: the image check, the
credentials, the name rules and the image definition's compatibility. The
upload disk and the managed image are named by the image's content id, and
versions are tagged with it, so a rerun (after a crash, a kill or Ctrl-C)
finds what an earlier run left and continues; a rerun after success changes
nothing. A local journal keyed by the content id only saves time; the cloud
is the truth.

The modules: :mod:`.context` (the input, the options, the shared context and
the step protocol with its :class:`StepResult`), the steps by phase
(:mod:`.checks`, :mod:`.upload`, :mod:`.gallery`, :mod:`.after`) and
:mod:`.runner`, which plans or runs them in order.
"""

from __future__ import annotations

from nixos_azure_publish.pipeline.context import (
    Context,
    PublishInput,
    PublishOptions,
    Step,
    StepResult,
)
from nixos_azure_publish.pipeline.runner import STEPS, Pipeline

__all__ = ["STEPS", "Context", "Pipeline", "PublishInput", "PublishOptions", "Step", "StepResult"]
