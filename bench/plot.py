"""Plot CPU per request and latency against request body size, one line per setup
(plain Envoy, the Wasm floor, the filter as Wasm and as the native module, ext_proc),
from bench/out/results.json.

    python bench/plot.py bench/out/results.json bench/latency_vs_body.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

KB = 1024
SETUPS = [("plain", "plain Envoy"), ("floor", "floor (empty Wasm filter)"),
          ("filter", "ai-gateway-filter"), ("native", "ai-gateway-filter, native module"),
          ("ext_proc", "ext_proc + no-op processor")]


def main(src, dst):
    with open(src) as f:
        res = json.load(f)
    sizes = res["sizes"]
    kb = [s / KB for s in sizes]
    rows = [res["throughput"][f"chat_{s // KB}k"] for s in sizes]
    fits = res.get("cpu_fit", {})
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))

    # Results from before a setup existed (bench.run_bench --render-only) lack its rows.
    setups = [(n, lbl) for n, lbl in SETUPS if all(n in r for r in rows)]
    for name, label in setups:
        line, = ax1.plot(kb, [r[name]["cpu_us_per_req"] for r in rows], "o-", label=label)
        if name == "ext_proc":
            ax1.plot(kb, [r[name]["envoy_cpu_us_per_req"] for r in rows], "x:",
                     color=line.get_color(), alpha=0.7, label="ext_proc: Envoy's share")
        f = fits.get(name)
        if f:
            ax1.plot(kb, [f["a"] + f["b"] * x for x in kb], "--", color=line.get_color(), alpha=0.3)
    ax1.set_xlabel("chat request body (KB)")
    ax1.set_ylabel("CPU µs per request (Envoy + processor)")
    ax1.set_title("CPU per request (dashed: linear fit)")
    ax1.grid(True, alpha=0.3)
    ax1.legend(fontsize=8)

    for name, label in setups:
        ax2.plot(kb, [r[name]["latency_us"]["p50"] for r in rows], "o-", label=f"{label}, p50")
    ax2.set_xscale("log", base=2)
    ax2.set_xticks(kb, [f"{k:g}" for k in kb])
    ax2.set_yscale("log")
    ax2.set_xlabel("chat request body (KB)")
    ax2.set_ylabel(f"latency (µs), {res['settings']['conns']} connections")
    ax2.set_title("Request latency under load (one Envoy worker)")
    ax2.grid(True, which="both", alpha=0.3)
    ax2.legend(fontsize=8)

    m = res.get("machine", {})
    envoy = str(m.get("envoy", ""))
    fig.suptitle(f"plain Envoy vs Wasm floor vs ai-gateway-filter (Wasm, native) vs ext_proc — {m.get('nproc')} cores "
                 f"{m.get('cpu', '')}, Envoy {envoy.split('/')[1] if '/' in envoy else ''}, "
                 f"{res.get('date', '')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(dst, dpi=110)
    print(f"wrote {dst}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
