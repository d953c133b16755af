#!/usr/bin/env python3
"""Usage: table.py KV_CSV [QUIET_MAX]  ->  markdown table of run.sh's cells on stdout.

One row per (mode, op, connections). Each system's cell lists every run as
"req/s (p99 ms)". The ratio is the median over runs of Arca/OpenBao, each run's pair measured
back to back (OpenBao, then Arca), so both saw the same state of the shared host. CPU columns
are medians over runs, in % of one core: the system's three servers / wrk / other host load.
Notes flag what makes a cell suspect: non-2xx answers, socket errors, a busy host before the
run (pre_busy >= QUIET_MAX), foreign load during it (other > 30), the idle system not idle.
"""
import collections
import csv
import statistics
import sys

SYSTEMS = (("arca", "Arca"), ("openbao", "OpenBao"))


def main():
    path = sys.argv[1]
    quiet_max = float(sys.argv[2]) if len(sys.argv) > 2 else 30.0
    cells = collections.defaultdict(lambda: collections.defaultdict(dict))
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            cells[(r["mode"], r["op"], int(r["conns"]))][r["system"]][int(r["run"])] = r

    mode_order = {"one": 0, "spread": 1}
    op_order = {"read": 0, "write": 1}
    keys = sorted(cells, key=lambda k: (mode_order.get(k[0], 9), op_order.get(k[1], 9), k[2]))

    def runs(rs):
        return " · ".join(f"{float(r['rps']):.0f} ({float(r['p99_ms']):.1f})" for _, r in sorted(rs.items())) or "–"

    def cpu(rs):
        if not rs:
            return "–"
        med = lambda k: statistics.median(float(r[k]) for r in rs.values())
        return f"{med('srv_cpu'):.0f} / {med('wrk_cpu'):.0f} / {med('other_cpu'):.0f}"

    print("| mode | op | conns | Arca req/s (p99 ms) | OpenBao req/s (p99 ms) | Arca/OpenBao "
          "| Arca CPU srv / wrk / other | OpenBao CPU srv / wrk / other | notes |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key in keys:
        mode, op, conns = key
        a, b = cells[key].get("arca", {}), cells[key].get("openbao", {})
        pairs = [float(a[i]["rps"]) / float(b[i]["rps"]) for i in sorted(a.keys() & b.keys()) if float(b[i]["rps"]) > 0]
        ratio = f"{statistics.median(pairs):.2f}×" if pairs else "–"
        notes = []
        for sysname, label in SYSTEMS:
            rs = cells[key].get(sysname, {})
            non2xx = sum(int(r["non2xx"]) for r in rs.values())
            errors = sum(int(r["errors"]) for r in rs.values())
            if non2xx:
                notes.append(f"{label}: {non2xx} non-2xx")
            if errors:
                notes.append(f"{label}: {errors} socket errors")
            busy = [str(i) for i, r in sorted(rs.items()) if float(r["pre_busy"]) >= quiet_max]
            if busy:
                notes.append(f"{label}: host busy before run {','.join(busy)}")
            other = [str(i) for i, r in sorted(rs.items()) if float(r["other_cpu"]) > 30]
            if other:
                # Foreign load, or the kernel's own I/O work for fsync-heavy cells: see kv.csv.
                notes.append(f"{label}: other CPU >30% in run {','.join(other)}")
            idle = [str(i) for i, r in sorted(rs.items()) if float(r["peer_cpu"]) > 10]
            if idle:
                notes.append(f"{label}: the other system used >10% CPU in run {','.join(idle)}")
        print(f"| {mode} | {op} | {conns} | {runs(a)} | {runs(b)} | {ratio} | {cpu(a)} | {cpu(b)} | {'; '.join(notes)} |")


if __name__ == "__main__":
    main()
