"""The demo, test and benchmark harness: the Envoy bootstrap renderer (render.py, from
envoy.template.yaml), the launcher of the mock backends and Envoy (launcher.py) and the
local JWT signing key (jwt_keys.py).

`make venv` installs it editable into .venv (pyproject.toml at the repository root), so
`make demo`, the integration tests and `make bench` import the same code as `harness.*`.
Paths it uses (the .venv's Envoy, target/, filters/) are relative to the repository root,
the parent of this directory.
"""
