#!/usr/bin/env python3
"""The comparisons and the report of scripts/gpu-check.sh (plain Python 3, no packages: it runs on the GPU
machine's python3 and on a bare Debian alike). Each subcommand prints one line of verdict and writes its details as
JSON (--json FILE) for the report:

  eval      OUT.json MODEL S STRIDE BATCH DEVICE      perplexity vs tests/data/eval/reference.json
  generate  OUT.json MODEL CACHE DEVICE               new ids vs the reference (bf16 rule: scripts/gpu-check-bf16.json)
  grad      GRADS.safetensors CASE DEVICE             the loss in the metadata vs the golden's
  same      DIR_A DIR_B [--close]                     metrics.jsonl losses and saved weights: bitwise (or --close)
  sanitizer LOG                                       the first errors of a compute-sanitizer log
  failed    GTEST.json LOG                            the failed (or crashed) test cases, as a gtest filter
  report    WORK OUT                                  gpu-check.json + report.md from WORK/steps/*.json
  step, meta, prompt                                  bookkeeping of gpu-check.sh

Exit status 0: pass; 1: fail; 2: usage or unreadable input.
"""
import glob
import json
import math
import os
import re
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.environ.get("MINISEQ_TEST_DATA") or os.path.join(ROOT, "tests", "data")

# Tolerances (docs/cuda.md, "gpu-check"): CUDA computes in bf16 (u = 2^-8), the CPU in fp32.
U = 2.0**-8
# Perplexity = exp(mean loss), so its relative error is the absolute error of the mean loss. Two independent bf16
# implementations (transformers in bf16, eager and SDPA) land within 1.2e-4 of the fp32 reference on every golden
# eval case (gpu-check-bf16.json); 2e-3 (= u/2) leaves a factor 16 for another kernel's rounding order, while the
# golden models are so close to uniform (perplexity 131 = the vocabulary for constant logits, 3% below 134.98)
# that 1e-2 would hardly tell a model that outputs constants from a correct one.
PPL_TOL = {"cuda": 2e-3, "cpu": 1e-7}
# `miniseq grad` loss vs the fp32 golden: 2u relative on CUDA as tests/test_grad_golden_cuda.cpp; 1e-5 on the CPU.
LOSS_TOL = {"cuda": 2 * U, "cpu": 1e-5}
# Runs whose only difference is AdamW on the host (CPU, no FMA contraction) instead of the device (nvcc contracts
# to FMA): the fp32 master weights may differ in the last bit, so a bf16 weight can land one ulp apart now and
# then, and the losses follow by ~1e-7. Anything a lost or stale copy does is orders of magnitude larger.
CLOSE_LOSS_REL = 1e-4
CLOSE_MAX_ULP = 2
CLOSE_MAX_FRACTION = 0.01


def load_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def dump(path, obj):
    if path:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1)
        os.replace(tmp, path)


def reference():
    return load_json(os.path.join(DATA, "eval", "reference.json"), {})


def verdict(ok, line, details, out):
    details["pass"] = bool(ok)
    details["line"] = line
    dump(out, details)
    print(("PASS " if ok else "FAIL ") + line)
    return 0 if ok else 1


# ---- eval ----
def cmd_eval(result_json, model, seq_len, stride, batch, device, out=None):
    seq_len, stride, batch = int(seq_len), int(stride), int(batch)
    ref = next((c for c in reference().get("eval", []) if c["model"] == model and c["seq_len"] == seq_len
                and c["stride"] == stride and c["batch"] == batch and not c["rope_scaling_factor"]), None)
    got = load_json(result_json)
    d = {"check": "eval", "model": model, "seq_len": seq_len, "stride": stride, "batch": batch}
    if ref is None or got is None or "perplexity" not in got:
        return verdict(False, f"eval {model}: no result or no reference", d, out)
    rel = got["perplexity"] / ref["perplexity"] - 1
    tol = PPL_TOL[device]
    d.update(perplexity=got["perplexity"], reference=ref["perplexity"], relative_error=rel, tolerance=tol,
             scored=got.get("scored_tokens"), reference_scored=ref["scored"])
    ok = abs(rel) <= tol and got.get("scored_tokens") == ref["scored"]
    return verdict(ok, f"eval {model} S={seq_len} stride={stride} batch={batch}: perplexity {got['perplexity']:.6f}"
                   f" vs transformers {ref['perplexity']:.6f}, relative {rel:+.2e} (tolerance {tol:.0e})", d, out)


# ---- generate ----
def cmd_generate(result_json, model, cache, device, out=None):
    use_cache = cache.lower() in ("true", "1", "yes")
    ref = next((g for g in reference().get("generation", []) if g["model"] == model), None)
    margins = next((g for g in (load_json(os.path.join(ROOT, "scripts", "gpu-check-bf16.json"), {}) or {})
                    .get("generation", []) if g["model"] == model), None)
    got = load_json(result_json)
    d = {"check": "generate", "model": model, "use_cache": use_cache}
    if ref is None or got is None or "new_ids" not in got:
        return verdict(False, f"generate {model}: no result or no reference", d, out)
    want = ref["new_ids"] if use_cache else ref["new_ids_no_cache"]
    ids = got["new_ids"]
    first = next((i for i, (a, b) in enumerate(zip(ids, want)) if a != b), None)
    if first is None and len(ids) != len(want):
        first = min(len(ids), len(want))
    d.update(new_ids=ids, reference=want, first_difference=first)
    name = f"generate {model} ({'KV cache' if use_cache else 'no cache'})"
    if first is None:
        return verdict(True, f"{name}: all {len(want)} ids equal transformers'", d, out)
    if device == "cuda" and margins and first < len(margins["margins"]):
        m, bound = margins["margins"][first], margins["bound"]
        d.update(margin=m, bound=bound, guaranteed_prefix=margins["guaranteed_prefix"])
        if m < bound:
            return verdict(True, f"{name}: first {first} ids equal; at new token {first} transformers' top-2 logit "
                           f"margin is {m:.1e} < bf16 bound {bound:.1e}, so bf16 may choose either (then the "
                           f"context differs)", d, out)
        return verdict(False, f"{name}: differs at new token {first} ({ids[first]} vs {want[first]}) where the "
                       f"margin {m:.1e} exceeds the bf16 bound {bound:.1e}", d, out)
    return verdict(False, f"{name}: differs at new token {first}: {ids[first:first + 5]} vs {want[first:first + 5]}",
                   d, out)


# ---- safetensors ----
def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {}) or {}
    tensors = {k: (v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]]) for k, v in header.items()}
    return meta, tensors


def cmd_grad(grads, case, device, out=None):
    d = {"check": "grad", "case": case}
    try:
        meta, _ = read_safetensors(grads)
        gold, _ = read_safetensors(os.path.join(DATA, "golden", case, "grads.safetensors"))
        loss, want = float(meta["loss"]), float(gold.get("loss_f64", gold["loss"]))
    except (OSError, KeyError, ValueError) as e:
        return verdict(False, f"grad {case}: {e}", d, out)
    rel = loss / want - 1
    d.update(loss=loss, golden=want, relative_error=rel, tolerance=LOSS_TOL[device])
    return verdict(abs(rel) <= LOSS_TOL[device], f"grad {case}: loss {loss:.7f} vs golden {want:.7f}, relative "
                   f"{rel:+.1e} (tolerance {LOSS_TOL[device]:.1e})", d, out)


# ---- two training runs ----
def losses(run_dir):
    out = []
    try:
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            for line in f:
                r = json.loads(line)
                if "loss" in r and "step" in r:
                    out.append((r["step"], r["loss"], r.get("grad_norm")))
    except OSError:
        pass
    return out


def weights(run_dir):
    t = {}
    for p in sorted(glob.glob(os.path.join(run_dir, "*.safetensors"))):
        t.update(read_safetensors(p)[1])
    return t


def as_ints(dtype, raw):
    if dtype in ("BF16", "F16"):
        return struct.unpack(f"<{len(raw) // 2}h", raw)
    if dtype == "F32":
        return struct.unpack(f"<{len(raw) // 4}i", raw)
    return None


def ordered(x, bits):
    # Sign-magnitude integer -> monotone integer, so that adjacent floats differ by 1.
    mag = x & ((1 << (bits - 1)) - 1)
    return mag if x >= 0 else -mag


def cmd_same(a, b, *flags, out=None):
    close = "--close" in flags
    la, lb = losses(a), losses(b)
    wa, wb = weights(a), weights(b)
    d = {"check": "same", "a": os.path.basename(a), "b": os.path.basename(b), "mode": "close" if close else "bitwise",
         "steps": len(la)}
    if not la or not wa or len(la) != len(lb) or set(wa) != set(wb):
        return verdict(False, f"{d['b']} vs {d['a']}: missing output (steps {len(la)}/{len(lb)}, tensors "
                       f"{len(wa)}/{len(wb)})", d, out)
    loss_bitwise = la == lb
    worst_loss = max(abs(x[1] / y[1] - 1) if y[1] else abs(x[1]) for x, y in zip(lb, la))
    differing, elements, worst_ulp, worst_fraction = 0, 0, 0, 0.0
    for name in sorted(wa):
        (dt, shape, ra), (dt2, _, rb) = wa[name], wb[name]
        if ra == rb:
            elements += len(ra) // {"F32": 4, "BF16": 2, "F16": 2}.get(dt, 1)
            continue
        ia, ib = as_ints(dt, ra), as_ints(dt2, rb)
        if ia is None or ib is None or len(ia) != len(ib):
            worst_ulp = math.inf
            continue
        bits = 16 if dt != "F32" else 32
        n = sum(1 for x, y in zip(ia, ib) if x != y)
        differing += n
        elements += len(ia)
        worst_fraction = max(worst_fraction, n / len(ia))
        worst_ulp = max(worst_ulp, max(abs(ordered(x, bits) - ordered(y, bits)) for x, y in zip(ia, ib)))
    weights_bitwise = differing == 0 and worst_ulp == 0
    d.update(loss_bitwise=loss_bitwise, worst_loss_relative=worst_loss, weights_bitwise=weights_bitwise,
             differing_weights=differing, weights=elements, worst_ulp=worst_ulp, worst_fraction=worst_fraction,
             losses=[x[1] for x in lb])
    name = f"{d['b']} vs {d['a']} ({len(la)} steps)"
    if loss_bitwise and weights_bitwise:
        return verdict(True, f"{name}: bitwise equal (losses and {elements} weights)", d, out)
    what = (f"losses {'equal' if loss_bitwise else f'differ by up to {worst_loss:.1e} relative'}, {differing} of "
            f"{elements} weights differ (up to {worst_ulp} ulp)")
    if not close:
        return verdict(False, f"{name}: not bitwise: {what}", d, out)
    ok = worst_loss <= CLOSE_LOSS_REL and worst_ulp <= CLOSE_MAX_ULP and worst_fraction <= CLOSE_MAX_FRACTION
    return verdict(ok, f"{name}: {what} (allowed: host vs device AdamW rounding, losses {CLOSE_LOSS_REL:.0e}, "
                   f"{CLOSE_MAX_ULP} ulp, {CLOSE_MAX_FRACTION:.0%} of a tensor)", d, out)


# ---- logs ----
def cmd_sanitizer(log, out=None):
    try:
        text = open(log, errors="replace").read()
    except OSError:
        text = ""
    errors = [ln.strip() for ln in text.splitlines() if re.match(r"=+ (Invalid|Race|Error|Warning|Uninit|Barrier)",
                                                                  ln.strip()) or " at 0x" in ln or "in /" in ln]
    summary = re.findall(r"=+ ERROR SUMMARY: (\d+) error", text)
    d = {"check": "sanitizer", "errors": sum(map(int, summary)) if summary else None, "first": errors[:12]}
    dump(out, d)
    head = (f"compute-sanitizer: {d['errors']} errors in {len(summary)} runs" if summary
            else "no compute-sanitizer run finished")
    print(head + ("".join("\n  " + e for e in errors[:12]) if errors else ""))
    return 0


def cmd_failed(gtest_json, log):
    """Prints the failed test cases as a gtest filter (A.B:C.D); a crash leaves no JSON: then the case that was
    RUN and never finished in the log."""
    names = []
    for suite in (load_json(gtest_json, {}) or {}).get("testsuites", []):
        for t in suite.get("testsuite", []):
            if t.get("failures"):
                names.append(suite["name"] + "." + t["name"])
    if not names:
        try:
            text = open(log, errors="replace").read()
        except OSError:
            text = ""
        running = None
        for ln in text.splitlines():
            m = re.match(r"\[ RUN      \] (\S+)", ln)
            if m:
                running = m.group(1)
            elif re.match(r"\[ +(OK|FAILED|SKIPPED) +\] ", ln) and running:
                if "FAILED" in ln:
                    names.append(running)
                running = None
        if running:
            names.append(running)
    print(":".join(dict.fromkeys(names)))
    return 0


# ---- report ----
def cmd_report(work, out):
    steps = []
    for p in sorted(glob.glob(os.path.join(work, "steps", "*.json"))):
        s = load_json(p)
        if s:
            steps.append(s)
    steps.sort(key=lambda s: s.get("order", 99))
    checks = []
    for p in sorted(glob.glob(os.path.join(work, "checks", "*.json"))):
        c = load_json(p)
        if c:
            c["id"] = os.path.basename(p)[:-5]
            checks.append(c)
    meta = load_json(os.path.join(work, "meta.json"), {}) or {}
    bench = load_json(os.path.join(work, "bench.json"))
    ops_err = grep_prefix(os.path.join(out, "ops.log"), "[err]")
    golden_err = grep_prefix(os.path.join(out, "golden.log"), "[golden]")
    statuses = [s.get("status") for s in steps]
    if any(x in ("fail", "timeout", "killed") for x in statuses):
        overall = "FAIL"
    elif meta.get("dry_run"):
        overall = "DRY RUN"
    elif all(x in ("pass", "not needed", "done") for x in statuses) and len(steps) >= meta.get("steps_planned", 0):
        overall = "PASS"
    else:
        overall = "INCOMPLETE"
    summary = dict(meta, overall=overall, steps=steps, checks=checks, op_errors=ops_err, golden_errors=golden_err,
                   benchmark=bench)
    dump(os.path.join(out, "gpu-check.json"), summary)
    r = [f"# CUDA backend GPU check (scripts/gpu-check.sh): {overall}", "",
         f"Device: {meta.get('device', '?')}. Commit {meta.get('commit', '?')}. Budget {meta.get('budget_s', '?')} s; "
         f"elapsed {meta.get('elapsed_s', '?')} s" + (" (dry run: no GPU, CUDA steps skipped)" if meta.get("dry_run")
                                                       else "") + ".", "",
         "| step | status | seconds | timeout | summary |", "|---|---|---|---|---|"]
    for s in steps:
        r.append(f"| {s['name']} | {s['status']} | {s.get('seconds', '')} | {s.get('timeout_s', '')} | "
                 f"{s.get('summary', '').replace('|', '/')} |")
    r += ["", "## Checks", ""]
    for c in checks:
        r.append(f"- {'PASS' if c.get('pass') else 'FAIL'} {c.get('line', c['id'])}")
    for s in steps:
        for ln in s.get("notes", []):
            r.append(f"- note ({s['name']}): {ln}")
    if bench:
        r += ["", f"## Benchmark: {bench.get('layers')} Mistral-7B-shaped layers, MsT + checkpointing, batch 1", "",
              f"cuBLASLt bf16 GEMM rate: {bench.get('gemm_tflops', 0):.0f} TFLOP/s.", "",
              "| S | step s | tokens/s | model TFLOP/s | MFU (989) | MFU (GEMM) | planned GiB | measured GiB | "
              "measured/planned | repeatable |", "|---|---|---|---|---|---|---|---|---|---|"]
        for x in bench.get("runs", []):
            r.append(f"| {x['S']} | {x['step_seconds']:.3f} | {x['tokens_per_second']:.0f} | {x['model_tflops']:.0f} | "
                     f"{100 * x['mfu_vs_989']:.1f}% | {100 * x['mfu_vs_gemm']:.1f}% | "
                     f"{x['planned_arena_bytes'] / 2**30:.2f} | {x['measured_device_bytes'] / 2**30:.2f} | "
                     f"{x['measured_over_planned']:.3f} | {x['bitwise_repeatable']} |")
    if ops_err:
        r += ["", "## Op errors (CUDA vs CPU, observed vs tolerance)", "", "```"] + ops_err + ["```"]
    if golden_err:
        r += ["", "## Golden models (loss and worst gradient per case and policy)", "", "```"] + golden_err + ["```"]
    bench_rows = [] if bench else [ln.rstrip() for ln in open_lines(os.path.join(out, "bench.log"))
                                   if re.match(r"^\s+\d+\s+\d+\.\d+\s+\d+", ln)]
    if bench_rows:
        r += ["", "## Benchmark rows that finished (bench.log; the run did not complete)", "", "```"] + bench_rows + ["```"]
    r += ["", "Logs: build.log, ops.log, golden.log, cli.log (commands, eval/generate, training policies), "
          "sanitizer.log, bench.log."]
    tmp = os.path.join(out, "report.md.tmp")
    with open(tmp, "w") as f:
        f.write("\n".join(r) + "\n")
    os.replace(tmp, os.path.join(out, "report.md"))
    with open(os.path.join(work, "summary.txt"), "w") as f:
        f.write("\n".join(summary_lines(meta, overall, steps, checks, bench, bench_rows)) + "\n")
    return 0


def open_lines(path):
    try:
        with open(path, errors="replace") as f:
            return f.readlines()
    except OSError:
        return []


def cmd_step(out, name, order, status, seconds, budget, timeout, summary, *notes):
    dump(out, dict(name=name, order=int(order), status=status, seconds=int(seconds), budget_s=int(budget),
                   timeout_s=int(timeout), summary=summary, notes=list(notes)))
    return 0


def cmd_meta(out, device, commit, budget, elapsed, dry, steps, jobs, nvcc):
    dump(out, dict(device=device, commit=commit, budget_s=int(budget), elapsed_s=int(elapsed), dry_run=dry == "1",
                   steps_planned=int(steps), jobs=int(jobs), nvcc=nvcc))
    return 0


def cmd_prompt(model):
    g = next(g for g in reference()["generation"] if g["model"] == model)
    print(json.dumps(g["prompt_ids"], separators=(",", ":")), g["max_new_tokens"])
    return 0


def summary_lines(meta, overall, steps, checks, bench, bench_rows):
    r = [f"==== gpu-check: {overall} ({meta.get('device', '?')}; {meta.get('elapsed_s', '?')} s of "
         f"{meta.get('budget_s', '?')}) ===="]
    r.append(f"{'step':12} {'status':10} {'s':>4} {'limit':>5}  summary")
    for s in steps:
        r.append(f"{s['name']:12} {s['status']:10} {s.get('seconds', 0):4} {s.get('timeout_s', 0):5}  "
                 f"{s.get('summary', '')[:150]}")
    for s in steps:
        if s.get("status") in ("fail", "timeout", "killed", "done"):
            r += [f"  {s['name']}: " + re.sub(r"^=+\s*", "", n)[:160] for n in s.get("notes", [])[:4]]
    bad = [c for c in checks if not c.get("pass")]
    if bad:
        r.append(f"failed checks ({len(bad)} of {len(checks)}):")
        r += ["  " + c.get("line", c["id"])[:200] for c in bad[:10]]
    elif checks:
        r.append(f"all {len(checks)} comparisons passed (report.md lists them)")
    if bench:
        r.append("bench: " + "; ".join(f"S={x['S']} {x['tokens_per_second']:.0f} tok/s MFU {100 * x['mfu_vs_989']:.1f}% "
                                       f"mem {x['measured_over_planned']:.3f}x plan" for x in bench.get("runs", [])))
    elif bench_rows:
        r.append("bench (partial, from bench.log): " + " | ".join(" ".join(x.split()[:5]) for x in bench_rows))
    r.append("files: report.md gpu-check.json build.log ops.log golden.log cli.log sanitizer.log bench.log")
    return r


def grep_prefix(path, prefix):
    try:
        with open(path, errors="replace") as f:
            return [ln[len(prefix):].strip() for ln in f if ln.startswith(prefix)]
    except OSError:
        return []


def main(argv):
    out = None
    if "--json" in argv:
        i = argv.index("--json")
        out = argv[i + 1]
        argv = argv[:i] + argv[i + 2:]
    cmds = {"eval": cmd_eval, "generate": cmd_generate, "grad": cmd_grad, "same": cmd_same,
            "sanitizer": cmd_sanitizer}
    if len(argv) >= 2 and argv[1] in cmds:
        return cmds[argv[1]](*argv[2:], out=out)
    if len(argv) == 4 and argv[1] == "failed":
        return cmd_failed(argv[2], argv[3])
    if len(argv) == 4 and argv[1] == "report":
        return cmd_report(argv[2], argv[3])
    if len(argv) >= 10 and argv[1] == "step":
        return cmd_step(*argv[2:])
    if len(argv) == 11 and argv[1] == "meta":
        return cmd_meta(*argv[2:])
    if len(argv) == 3 and argv[1] == "prompt":
        return cmd_prompt(argv[2])
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
