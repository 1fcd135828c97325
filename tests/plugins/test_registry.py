import pytest

from segcli.errors import ConfigError, DataError, PluginError, UnknownNameError
from segcli.registry import Origin, Registry, plural


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


@pytest.mark.parametrize(
    ("target", "shown"),
    [(None, "None"), (42, "42 (int)"), ("os:sep", "'os:sep' resolves to it")],
)
def test_a_target_that_is_not_a_factory_is_a_plugin_error_naming_plugin_and_name(target, shown):
    registry = Registry("model")
    registry.add("hollow", target, "", Origin("hollow-plugin", "segcli-hollow", "0.3"))
    with pytest.raises(PluginError, match="not a callable factory") as error:
        registry.get("hollow")
    message = str(error.value)
    assert "hollow-plugin (segcli-hollow 0.3)" in message
    assert "model 'hollow'" in message
    assert shown in message


def test_recipes_must_be_dicts():
    from segcli.plugins import Plugins

    recipes = Plugins().recipes
    recipes.add("good", {"model": {"name": "unet"}}, "", Origin("p"))
    recipes.add("bad", print, "", Origin("p"))
    assert recipes.get("good") == {"model": {"name": "unet"}}
    with pytest.raises(PluginError, match="recipe 'bad' as .* not a dict"):
        recipes.get("bad")


def test_factory_failures_are_blamed_on_the_right_party():
    registry = Registry("model")
    registry.add("net", object(), "", Origin("third", "segcli-third", "2.0"))
    with pytest.raises(PluginError) as error, registry.factory_errors("net", {}):
        {}["backbone"]
    message = str(error.value)
    assert (
        "model 'net' from plugin third (segcli-third 2.0) failed: KeyError: 'backbone'" in message
    )
    assert "\n" not in message
    with pytest.raises(ConfigError, match="model 'net' rejected its options {'depth': 'x'}"):
        with registry.factory_errors("net", {"depth": "x"}):
            raise TypeError("depth must be an int")
    with pytest.raises(DataError, match="own message"):  # segcli's own errors pass unchanged
        with registry.factory_errors("net", {}):
            raise DataError("own message")
    # with no options given, a TypeError is the plugin's bug, not the user's options
    with pytest.raises(PluginError, match="model 'net' from plugin third .* TypeError"):
        with registry.factory_errors("net", {}):
            raise TypeError("unsupported operand")
    with pytest.raises(PluginError, match="ValueError: bad header"):  # e.g. while reading data
        with registry.plugin_errors("net"):
            raise ValueError("bad header")


def test_unknown_loss_points_at_segcli_list_losses():
    registry = Registry("loss")
    registry.add("dice", object(), "", Origin("p"))
    with pytest.raises(UnknownNameError) as error:
        registry.get("dise")
    assert "Valid losses: dice (see `segcli list losses`)" in str(error.value)
    assert "losss" not in str(error.value)


def test_plural_of_every_kind():
    from segcli.plugins import KINDS

    assert [plural(kind) for kind in KINDS] == [
        "datasets",
        "models",
        "losses",
        "metrics",
        "optimizers",
        "schedulers",
        "transforms",
        "loggers",
        "recipes",
        "planners",
    ]


def test_the_new_kinds_have_a_registry_and_a_hook():
    from segcli.hookspecs import register_optimizers, register_schedulers, register_transforms
    from segcli.plugins import Plugins

    plugins = Plugins()
    assert plugins.optimizers.kind == "optimizer"
    assert plugins.schedulers.kind == "scheduler"
    assert plugins.transforms.kind == "transform"
    for hook in (register_optimizers, register_schedulers, register_transforms):
        assert hasattr(hook, "segcli_spec")
