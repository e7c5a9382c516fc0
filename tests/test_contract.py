"""The public contract is documented: every name in core/src/contract.rs appears in docs/contract.md."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def contract_names():
    with open(os.path.join(ROOT, "core", "src", "contract.rs")) as f:
        src = f.read()
    return re.findall(r'pub const [A-Z_0-9]+: &str = "([^"]+)";', src)


def test_every_contract_name_is_documented():
    with open(os.path.join(ROOT, "docs", "contract.md")) as f:
        doc = f.read()
    names = contract_names()
    assert len(names) > 30
    missing = [n for n in names if f"`{n}`" not in doc]
    assert not missing, f"not documented in docs/contract.md: {missing}"


def test_stats_tags_cover_every_metric_label():
    from harness import render

    with open(os.path.join(ROOT, "core", "src", "metrics", "mod.rs")) as f:
        src = f.read()
    labels = set(re.findall(r'\("([a-z_]+)", ', src))
    labels.discard("le")
    assert labels <= set(render.METRIC_LABELS), labels - set(render.METRIC_LABELS)
