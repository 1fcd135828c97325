import pytest

from segcli.errors import PluginError, UnknownNameError
from segcli.registry import Origin, Registry


def test_lazy_target_is_imported_on_first_use_only():
    registry = Registry("model")
    registry.add("joiner", "os.path:join", "joins paths", Origin("p"))
    entry = registry.entry("joiner")
    assert entry._loaded is None
    import os.path

    assert registry.get("joiner") is os.path.join


def test_duplicate_name_names_both_plugins():
    registry = Registry("model")
    registry.add("unet", object(), "", Origin("first", "dist-a", "1.0"))
    with pytest.raises(PluginError, match="first.*second"):
        registry.add("unet", object(), "", Origin("second", "dist-b", "2.0"))


def test_unknown_name_suggests_close_matches_and_lists_valid_ones():
    registry = Registry("model")
    for name in ("unet", "unet-valid", "erfnet"):
        registry.add(name, object(), "", Origin("p"))
    with pytest.raises(UnknownNameError) as error:
        registry.get("unte")
    message = str(error.value)
    assert "did you mean 'unet'" in message
    assert "erfnet, unet, unet-valid" in message


def test_broken_lazy_target_is_a_plugin_error_naming_the_plugin():
    registry = Registry("model")
    registry.add("ghost", "no_such_module_xyz:thing", "", Origin("ghostly", "ghost-dist", "0.1"))
    with pytest.raises(PluginError, match="ghostly"):
        registry.get("ghost")
