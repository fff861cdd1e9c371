"""Schemas of the `component` group, one module per kind: `select`, `mix`, `weight` (torch-free). The
options of trainer `<trainer>` are registered as `/schema/component/<trainer>_<name>`; `none` (no component,
an open node so that `component._target_=my_pkg.MyClass +component.<arg>=...` works under every trainer)
as `/schema/component/none`."""

NO_COMPONENT = {"_target_": None}
