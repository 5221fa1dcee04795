"""Built-in configs: each module here has a `get_config()`; the module name is the config name."""
