"""The contract suite: checks any model, loss or metric plugin can run against itself.

Plain functions that raise ``AssertionError`` naming the broken property, so they work in
any test runner::

    from segcli.testing import check_loss, check_metric, check_model
    from my_plugin import build_my_net

    def test_my_net_keeps_the_contract():
        check_model(build_my_net, options={"width": 8})

segcli's own tests run them over everything registered
(tests/plugins/test_plugin_contracts.py), so a plugin is checked the moment it registers.
A plugin tunes that run with attributes, read when the check's own argument is left out:
``factory.test_options`` (a dict: the options to test with, e.g. small widths) on any
factory, and ``min_input_size`` (an int or ``(height, width)``) on a model. A factory that
raises anything but a segcli error is reported as a ``PluginError`` naming the plugin.
What each check asserts is documented in its docstring and in docs/testing-plugins.md.

By what is checked: `models`, `losses`, `metrics`, `transforms`, `optimisation` (optimisers
and schedules); `contract` holds what they share; everything is imported from here,
`from segcli.testing import check_model`. `segcli.testing.tools` skips a test whose program
or package is missing, and fails it in CI, where nothing may be missing.
"""

from segcli.testing.losses import check_loss
from segcli.testing.metrics import check_metric, pixels_from_matrix
from segcli.testing.models import check_model, padded_forward
from segcli.testing.optimisation import check_optimizer, check_scheduler
from segcli.testing.transforms import check_transform

__all__ = [
    "check_loss",
    "check_metric",
    "check_model",
    "check_optimizer",
    "check_scheduler",
    "check_transform",
    "padded_forward",
    "pixels_from_matrix",
]
