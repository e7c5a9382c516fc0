"""Plot latency and per-request cost against request body size from bench/out/results.json.

    python bench/plot.py bench/out/results.json bench/latency_vs_body.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

KB = 1024


def main(src, dst):
    with open(src) as f:
        res = json.load(f)
    sweep = res["sweep"]
    kb = [p["size"] / KB for p in sweep]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))

    ax1.plot(kb, [p["nf_p50"] for p in sweep], "o-", label="no filter, p50")
    ax1.plot(kb, [p["f_p50"] for p in sweep], "o-", label="filter, p50")
    ax1.plot(kb, [p["nf_p99"] for p in sweep], "x--", alpha=0.6, label="no filter, p99")
    ax1.plot(kb, [p["f_p99"] for p in sweep], "x--", alpha=0.6, label="filter, p99")
    ax1.set_xscale("log", base=2)
    ax1.set_xticks(kb, [f"{k:g}" for k in kb])
    ax1.set_yscale("log")
    ax1.set_xlabel("chat request body (KB)")
    ax1.set_ylabel("latency (µs), one connection")
    ax1.set_title("Request latency through Envoy (1 worker)")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend()

    ax2.plot(kb, [p["f_p50"] - p["nf_p50"] for p in sweep], "o-", label="added p50 latency")
    ax2.plot(kb, [p["cpu_added"] for p in sweep], "s-", label="added Envoy CPU per request")
    if all(p.get("busy") is not None for p in sweep):
        ax2.plot(kb, [p["busy"] for p in sweep], "^-", label="filter busy time (own histogram)")
    fits = res.get("sweep_fit", {})
    f = fits.get("added Envoy CPU/request vs body")
    if f:
        xs = [0] + kb
        ax2.plot(xs, [f["a"] + f["b"] * x for x in xs], ":", color="gray",
                 label=f"linear fit: {f['a']:.0f} µs + {f['b']:.2f} µs/KB (R²={f['r2']:.3f})")
    ax2.set_xlabel("chat request body (KB)")
    ax2.set_ylabel("µs per request")
    ax2.set_title("Cost added by the filter (linear axes)")
    ax2.grid(True, alpha=0.3)
    ax2.legend(fontsize=8)

    m = res.get("machine", {})
    fig.suptitle(f"ai-gateway-filter overhead — {m.get('nproc')} cores {m.get('cpu', '')}, "
                 f"Envoy {str(m.get('envoy', '')).split('/')[1] if '/' in str(m.get('envoy', '')) else ''}, "
                 f"{res.get('date', '')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(dst, dpi=110)
    print(f"wrote {dst}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
