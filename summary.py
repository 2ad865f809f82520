import re, sys, glob, os
for f in sorted(glob.glob("/tmp/sweep39/log_*.txt")):
    n = f.split("log_")[1][:-4]; t = open(f).read()
    ratio = re.search(r"weights \S+ -> \S+ nonzero \(([\d.]+)x fewer\)", t)
    claim = re.search(r"the rule's closest test: output '([^']+)' \(([^)]*)\)", t)
    rc = re.search(r"rc=(\d+) wall=([\d.]+)", t)
    held = [l for l in t.splitlines() if re.match(r"^[A-Za-z_0-9]+: (changed|int output|rel_l2)", l)]
    err = re.search(r"^Error: (.*)$", t, re.M)
    print(f"{n} | {ratio.group(1) if ratio else '-'} | {claim.group(2) if claim else '-'} | rc {rc.group(1)} {float(rc.group(2)):.1f}s | {' ; '.join(h[:110] for h in held[:2])} | {err.group(1)[:150] if err else ''}")
