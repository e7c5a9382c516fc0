"""`make bench` and the tenant-count benchmark, run as modules from the repository root
(`.venv/bin/python -m bench.run_bench`, `-m bench.tenant_load`); they import the harness
package (installed into .venv by `make venv`) and each other as `bench.*`."""
