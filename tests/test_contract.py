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


def test_the_page_states_the_contract_version():
    with open(os.path.join(ROOT, "core", "src", "contract.rs")) as f:
        version = re.search(r"pub const CONTRACT_VERSION: u32 = (\d+);", f.read()).group(1)
    with open(os.path.join(ROOT, "docs", "contract.md")) as f:
        title = f.readline().strip()
    assert title == f"# The public contract (version {version})", (title, version)


def test_every_refusal_code_is_in_the_refusal_table():
    """Each `code` the filter can send (deny.rs, the body parser's codes) has a row in
    docs/contract.md's refusal table (core's deny tests check the rows' values)."""
    with open(os.path.join(ROOT, "docs", "contract.md")) as f:
        doc = f.read()
    table = doc.split("\n## Refusals\n", 1)[1].split("\n## ", 1)[0]
    with open(os.path.join(ROOT, "core", "src", "openai", "request.rs")) as f:
        body_codes = re.findall(r'=> "([a-z_]+)",', f.read().split("pub fn code(", 1)[1].split("\n    }\n", 1)[0])
    assert "invalid_json" in body_codes and "missing_model" in body_codes, body_codes
    missing = [c for c in body_codes if f"`{c}`" not in table]
    assert not missing, f"body error codes without a row in the refusal table: {missing}"
