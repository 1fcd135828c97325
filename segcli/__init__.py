"""segcli: semantic segmentation from a folder of images to a trained model, with plugins.

The public API for plugin authors is small and stable:

- ``segcli.hookimpl``: the marker for hook implementations (see ``segcli.hookspecs``);
- ``segcli.errors``: the exception types, one per kind of failure;
- ``segcli.data.prepare``: what a dataset preparer returns (``DatasetPlan``, ``Sample``,
  ``ClassInfo``);
- ``segcli.testing``: the contract checks a plugin's own tests can run;
- ``segcli.nn``: layers a model plugin may need (batch-norm that accepts a batch of one).

Importing this package imports neither torch nor any plugin.
"""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("segcli")

__all__ = ["__version__", "hookimpl"]
