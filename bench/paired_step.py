#!/usr/bin/env python3
"""miniseq against PyTorch, paired in one invocation (issue 18): one training step of the 125M Llama
(bench/configs/llama-125m.json, batch 1, fp32, all cores) at each length, PyTorch first, then miniseq, length by
length, so that load drift hits both alike.

    tools/.venv/bin/python bench/paired_step.py [--seq 1024 2048 4096 8192 16384 32768] [--bench build/bench_step_cpu]
        [--write docs/benchmarks.md] [--json out.json] [--max-step-seconds 2400]

PyTorch (torch + transformers from the venv, SDPA attention, tcmalloc preloaded when installed; each run in its own
process, one warm-up step, then one timed step, AdamW included): plain, gradient checkpointing, checkpointing +
chunked loss (bench/torch_reference.py). miniseq (build/bench_step_cpu --adamw: forward + backward + AdamW, same
weights init scale and random tokens): (a) no MsT, no checkpointing, (b) checkpointing, (c) checkpointing + MsT.
A configuration is skipped at a length when the previous length's peak RSS, scaled by the growth, would not fit
the available memory, or its time would pass --max-step-seconds ("—" in the table, with the reason). The machine's
facts (CPU flags, cores, memory, load, library versions) and the sgemm rate measured in the same run head the table.
With --write, the table replaces the block between the markers "<!-- paired-step:begin -->" and
"<!-- paired-step:end -->" of that file (appended if absent).
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TORCH_REF = os.path.join(HERE, "torch_reference.py")
TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4"
TORCH_VARIANTS = ["plain", "ckpt", "ckpt+chunked_loss"]
MINISEQ_POLICIES = {"a": "(a) no MsT, no ckpt", "b": "(b) ckpt", "c": "(c) ckpt + MsT"}
BEGIN, END = "<!-- paired-step:begin -->", "<!-- paired-step:end -->"


def meminfo(key):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def machine_facts():
    flags, model = set(), ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
    wanted = ["avx2", "fma", "f16c", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"]

    def pkg(name):
        p = subprocess.run(["dpkg-query", "-W", "-f=${Version}", name], capture_output=True, text=True)
        return p.stdout.strip() or "not installed"

    try:
        import torch
        import transformers
        torch_v = f"torch {torch.__version__} (CPU capability {torch.backends.cpu.get_cpu_capability()}), " \
            f"transformers {transformers.__version__}"
    except ImportError:
        torch_v = "torch not importable"
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "flags": {f: f in flags for f in wanted},
        "mem_total_gib": meminfo("MemTotal") / 2**30,
        # OPENBLAS_CORETYPE, when the environment sets it, fixes OpenBLAS's kernels (Haswell: AVX2 only)
        "openblas": pkg("libopenblas0-openmp") + (" with OPENBLAS_CORETYPE=" + os.environ["OPENBLAS_CORETYPE"]
                                                  if os.environ.get("OPENBLAS_CORETYPE") else ""),
        "tcmalloc": os.path.exists(TCMALLOC),
        "torch": torch_v,
        "kernel": platform.release(),
    }


def run_torch(variant, seq, steps):
    env = dict(os.environ)
    if os.path.exists(TCMALLOC):
        env["LD_PRELOAD"] = TCMALLOC
    t0 = time.time()
    p = subprocess.run([sys.executable, TORCH_REF, "--worker", variant, str(seq), "--steps", str(steps)], env=env,
                       capture_output=True, text=True)
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["exit %d" % p.returncode])[-1][-200:],
                "wall": time.time() - t0}
    row = json.loads(p.stdout.strip().splitlines()[-1])
    return {"seconds": row["seconds"], "peak_bytes": row["peak_rss_bytes"], "loss": row["loss"]}


def run_miniseq(bench, policies, seq, sgemm, out_json):
    cmd = [bench, "--adamw", "--reps", "1", "--policies", policies, "--json", out_json, str(seq)]
    if sgemm:
        cmd.insert(1, "--sgemm")
    p = subprocess.run(cmd, capture_output=True, text=True)
    sys.stderr.write(p.stderr)
    if p.returncode != 0:
        return None
    with open(out_json) as f:
        return json.load(f)


def fits(prev, growth, budget, max_seconds, time_growth):
    """Whether a configuration that took prev (seconds, peak bytes) at the previous length should run."""
    if prev is None:
        return True, ""
    if prev.get("error"):
        return False, "failed at a shorter length"
    if prev["peak_bytes"] * growth > budget:
        return False, "would not fit memory (%.1f GiB predicted)" % (prev["peak_bytes"] * growth / 2**30)
    if prev["seconds"] * time_growth > max_seconds:
        return False, "over --max-step-seconds (%.0f s predicted)" % (prev["seconds"] * time_growth)
    return True, ""


def table(facts, sgemm, rows, seqs, started, ended):
    f = facts["flags"]
    lines = [
        "Machine: %s, %d cores; flags: %s; %.1f GiB; OpenBLAS %s; %s%s. sgemm (OpenBLAS, all threads, the model's "
        "linear shapes at 4096 rows, measured in this run): **%.1f GFLOP/s**. Load average %s at the start, %s at "
        "the end; %s – %s UTC." % (
            facts["cpu"], facts["cores"], ", ".join(k + ("" if v else " (no)") for k, v in f.items()),
            facts["mem_total_gib"], facts["openblas"], facts["torch"], ", tcmalloc" if facts["tcmalloc"] else "",
            sgemm, started["load"], ended["load"], started["time"], ended["time"]),
        "",
        "Tokens/s of one training step (forward + backward + AdamW), batch 1; model GFLOP/s = (6·N·S + 6·L·S²·d) / "
        "seconds, recomputation not counted. Ratio = miniseq's fastest / PyTorch's fastest that ran; ckpt+MsT/(a) = "
        "the time of (c) over the time of (a) where both ran.",
        "",
        "| S | miniseq (a) no MsT/ckpt | (b) ckpt | (c) ckpt + MsT | PyTorch plain | ckpt | ckpt + chunked loss "
        "| ratio | (c)/(a) time |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    N, L, d = 124_668_672, 12, 768
    for S in seqs:
        r = rows[S]

        def cell(x):
            if x is None:
                return "—"
            if x.get("skipped"):
                return "— (%s)" % x["skipped"]
            if x.get("error"):
                return "failed: %s" % x["error"][:60]
            gf = (6 * N * S + 6 * L * S * S * d) / x["seconds"] / 1e9
            return "%.1f / %.0f" % (S / x["seconds"], gf)

        ms = [r["miniseq"].get(k) for k in "abc"]
        pt = [r["torch"].get(v) for v in TORCH_VARIANTS]
        best_ms = max((S / x["seconds"] for x in ms if x and "seconds" in x), default=None)
        best_pt = max((S / x["seconds"] for x in pt if x and "seconds" in x), default=None)
        ratio = "%.2f×" % (best_ms / best_pt) if best_ms and best_pt else "—"
        ca = "%.2f" % (ms[2]["seconds"] / ms[0]["seconds"]) if all(x and "seconds" in x for x in (ms[0], ms[2])) \
            else "—"
        lines.append("| %d | %s | %s | %s | %s | %s | %s | %s | %s |" % (S, *map(cell, ms), *map(cell, pt), ratio, ca))
    lines.append("")
    lines.append("Cells: tokens/s / model GFLOP/s.")
    return "\n".join(lines)


def write_block(path, text):
    block = BEGIN + "\n" + text + "\n" + END
    body = open(path).read() if os.path.exists(path) else ""
    if BEGIN in body and END in body:
        body = body[:body.index(BEGIN)] + block + body[body.index(END) + len(END):]
    else:
        body = body.rstrip("\n") + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(body)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384, 32768])
    ap.add_argument("--bench", default="build/bench_step_cpu")
    ap.add_argument("--write", default="")
    ap.add_argument("--json", default="")
    ap.add_argument("--max-step-seconds", type=float, default=2400)
    args = ap.parse_args()
    if not os.path.exists(args.bench):
        sys.exit("paired_step: %s not found: build it first (cmake --build build --target bench_step_cpu)" % args.bench)

    facts = machine_facts()
    started = {"load": "%.2f" % os.getloadavg()[0], "time": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    budget = 0.9 * meminfo("MemAvailable")
    rows, prev_t, prev_m, sgemm = {}, {}, {}, 0.0
    seqs = sorted(args.seq)
    for i, S in enumerate(seqs):
        growth = S / seqs[i - 1] if i else 1.0
        mem_growth, time_growth = growth * 1.1, growth * growth  # attention makes time grow up to quadratically
        rows[S] = {"torch": {}, "miniseq": {}}
        for v in TORCH_VARIANTS:
            ok, why = fits(prev_t.get(v), mem_growth, budget, args.max_step_seconds, time_growth)
            res = run_torch(v, S, 1) if ok else {"skipped": why}
            rows[S]["torch"][v] = res
            if ok:
                prev_t[v] = res
            print(json.dumps({"seq": S, "torch": v, **res}), flush=True)
        run = ""
        for k in "abc":
            ok, why = fits(prev_m.get(k), mem_growth, budget, args.max_step_seconds, time_growth)
            if ok:
                run += k
            else:
                rows[S]["miniseq"][k] = {"skipped": why}
        if run:
            out = run_miniseq(args.bench, run, S, sgemm == 0.0, "/tmp/paired_step_%d.json" % os.getpid())
            if out is None:
                for k in run:
                    rows[S]["miniseq"][k] = {"error": "bench_step_cpu failed"}
            else:
                sgemm = sgemm or out["sgemm_gflops"]
                for k, r in zip(run, out["rows"]):
                    res = {"seconds": r["seconds"], "peak_bytes": r["measured_bytes"], "loss": r["loss"]}
                    rows[S]["miniseq"][k] = res
                    prev_m[k] = res
        print(json.dumps({"seq": S, "miniseq": rows[S]["miniseq"]}), flush=True)
    ended = {"load": "%.2f" % os.getloadavg()[0], "time": time.strftime("%H:%M", time.gmtime())}
    text = table(facts, sgemm, rows, seqs, started, ended)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"facts": facts, "sgemm_gflops": sgemm, "rows": rows}, f, indent=1)
    if args.write:
        write_block(args.write, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
