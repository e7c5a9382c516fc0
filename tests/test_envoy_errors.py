"""Envoy's own refusals (upstream down, no route) are OpenAI-shaped like the filter's, and
the filter's own replies are left untouched by the bootstrap's local_reply_config."""
from client import HOST_B, KEY_B, assert_openai_error, call, chat_body
from conftest import demo_config
from harness.launcher import Topology


def test_envoy_errors_are_openai_shaped():
    with Topology(plugin_config=demo_config()) as gw:
        gw.stop_mock("embed-bge-small-v1")
        r = call(gw, "/v1/embeddings", {"model": "bge-small", "input": "x"}, host=HOST_B, key=KEY_B)
        err = assert_openai_error(r, 503)
        assert err["type"] == "server_error" and err["code"] in ("UF", "URX", "UH"), err
        # The filter matches routes case-insensitively; Envoy's routes are case-sensitive.
        r = call(gw, "/V1/CHAT/COMPLETIONS", chat_body())
        err = assert_openai_error(r, 404, "NR")
        # The filter's own replies keep their codes.
        assert_openai_error(call(gw, "/v1/files", chat_body()), 404, "route_not_found")
        assert_openai_error(call(gw, "/v1/models", None, key=None), 401, None)
